"""The knob table (contract/knobs.py) is the one place a knob is declared: the configs, flags,
range checks and Kubeflow runtime parameters all derive from it."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect

import pytest

from contract import knobs
from contract.knobs import (
    GATE_KNOBS,
    PER_RUN_KNOBS,
    RANGES,
    RECIPES,
    SECTIONS,
    TRAINER_KNOBS,
    GateKnobs,
    IngestionKnobs,
    Knobs,
    TrainingKnobs,
    flag_name,
    knob_types,
    row,
    sections,
)
from ingestion.settings import SplitSettings
from pipeline.config import PipelineConfig, add_flags
from tests.conftest import REPO
from trainer.config import TrainingConfig

PARTS = (IngestionKnobs, TrainingKnobs, GateKnobs)
# The typed configs other packages read, each the table or one of its parts.
VIEWS = {PipelineConfig: Knobs, TrainingConfig: TrainingKnobs, SplitSettings: IngestionKnobs}


def names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("view", VIEWS, ids=lambda c: c.__name__)
def test_the_typed_configs_declare_no_knob_of_their_own(view):
    # Their fields are the table's, with its types and defaults: a field declared in the view
    # would be a second declaration of a knob.
    assert inspect.get_annotations(view) == {}
    table = VIEWS[view]
    assert issubclass(view, table) and names(view) == names(table)
    assert knob_types(view) == knob_types(table)
    assert [f.default for f in dataclasses.fields(view)] == [
        f.default for f in dataclasses.fields(table)]


def test_each_knob_is_declared_in_one_part_of_the_table():
    declared = [name for cls in (*PARTS, Knobs) for name in inspect.get_annotations(cls)]
    assert len(declared) == len(set(declared)) == len(names(Knobs))
    assert all(row(f).help for f in dataclasses.fields(Knobs))


def test_no_other_class_declares_knobs():
    # A second config dataclass (or a TrainingConfig with its own fields again) would hold
    # several knob names; one shared name (a result's output_dir) is not a config.
    knob_names = set(names(Knobs))
    found = []
    for path in sorted(REPO.glob("*/**/*.py")):
        relative = path.relative_to(REPO)
        if relative.parts[0] in ("tests", "benchmarks") or str(relative) == "contract/knobs.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                declared = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)
                            and isinstance(s.target, ast.Name)} & knob_names
                if len(declared) > 1:
                    found.append(f"{relative}: {node.name} declares {sorted(declared)}")
    assert not found, "\n".join(found)


def test_every_numeric_knob_but_the_seed_has_a_range():
    types = knob_types(Knobs)
    numeric = {name for name, kind in types.items() if kind in (int, float)}
    assert numeric - {"seed"} == set(RANGES)
    assert list(RANGES) == [name for name in types if name in RANGES]  # table order


def test_the_knobs_a_run_may_set_are_the_trainers_and_the_evaluators_numbers():
    per_run = [f.name for f in dataclasses.fields(Knobs) if row(f).per_run]
    assert sorted(per_run) == sorted(PER_RUN_KNOBS) == sorted({**TRAINER_KNOBS, **GATE_KNOBS})
    assert set(TRAINER_KNOBS) <= set(names(TrainingKnobs))
    assert set(GATE_KNOBS) <= set(names(GateKnobs))
    for name, kind in PER_RUN_KNOBS.items():
        assert kind in (int, float) and name in RANGES, name  # range-checked when they run


def test_recipes_come_from_the_table():
    tutorial = {f.name: row(f).tutorial for f in dataclasses.fields(Knobs)
                if row(f).tutorial is not knobs._NOT_SET}
    assert RECIPES["tutorial"] == tutorial and RECIPES["default"] == {}
    for name, values in RECIPES.items():
        config = PipelineConfig.for_recipe(name)
        assert {k: getattr(config, k) for k in values} == values
        types = knob_types(Knobs)
        assert all(type(v) is types[k] for k, v in values.items())


def test_every_knob_is_a_flag_in_a_section():
    assert set(sections().values()) == set(SECTIONS)
    parser = argparse.ArgumentParser()
    add_flags(parser)
    groups = {g.title: [a.dest for a in g._group_actions] for g in parser._action_groups
              if g.title in SECTIONS}
    assert list(groups) == list(SECTIONS)
    by_section = {title: [n for n, s in sections().items() if s == title] for title in SECTIONS}
    assert groups == by_section
    flags = {flag for action in parser._actions for flag in action.option_strings}
    assert {flag_name(name) for name in names(Knobs)} <= flags


def test_a_section_must_be_one_of_the_sections():
    @dataclasses.dataclass(frozen=True)
    class Odd(Knobs):
        extra: int = knobs.knob(1, "An extra knob.", section="odd")

    with pytest.raises(ValueError, match="knob extra: section 'odd' is none of"):
        sections(Odd)

