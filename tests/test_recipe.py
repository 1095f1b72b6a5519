"""--recipe: the default recipe, the tutorial's one flag away, explicit flags winning."""

from __future__ import annotations

import argparse

import pytest

from contract.knobs import RECIPES
from pipeline.config import PipelineConfig, add_flags, config_from_args

# The TensorFlow tutorial's recipe as written, and the resolution of the shipped weights.
TUTORIAL_IMAGE_SIZE, TUTORIAL_EPOCHS, TUTORIAL_FINE_TUNE_EPOCHS, TUTORIAL_FINE_TUNE_AT = (
    160, 10, 10, 100)
TUTORIAL_LEARNING_RATE = 1e-4
WEIGHTS_IMAGE_SIZE = 224


def parse(*flags: str) -> PipelineConfig:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return config_from_args(parser.parse_args(list(flags)))


def test_the_default_recipe_is_the_field_defaults():
    cfg = parse()
    assert cfg == PipelineConfig() and cfg.recipe == "default"
    assert cfg.image_size == WEIGHTS_IMAGE_SIZE and cfg.cache_features and cfg.patience > 0


def test_tutorial_is_the_tutorial_recipe_as_written():
    cfg = parse("--recipe", "tutorial")
    tutorial = cfg.training_config()
    assert (tutorial.image_size, tutorial.epochs, tutorial.fine_tune_epochs,
            tutorial.fine_tune_at) == (TUTORIAL_IMAGE_SIZE, TUTORIAL_EPOCHS,
                                       TUTORIAL_FINE_TUNE_EPOCHS, TUTORIAL_FINE_TUNE_AT)
    assert tutorial.learning_rate == TUTORIAL_LEARNING_RATE
    assert tutorial.learning_rate * tutorial.fine_tune_lr_factor == pytest.approx(1e-5)
    assert not tutorial.cache_features and tutorial.patience == 0
    assert cfg == PipelineConfig.for_recipe("tutorial")


def test_explicit_flags_win_over_the_recipe():
    cfg = parse("--recipe", "tutorial", "--image-size", "224", "--patience", "3",
                "--cache-features")
    assert (cfg.image_size, cfg.patience, cfg.cache_features) == (224, 3, True)
    assert cfg.epochs == TUTORIAL_EPOCHS  # not given: the recipe's
    assert parse("--epochs", "7").epochs == 7


def test_every_recipe_value_is_a_knob_in_range():
    for name in RECIPES:
        PipelineConfig.for_recipe(name)  # raises on unknown knobs or values out of range
    with pytest.raises(ValueError, match="--recipe must be one of"):
        PipelineConfig.for_recipe("fastest")
    with pytest.raises(SystemExit):
        parse("--recipe", "fastest")


def test_help_shows_both_recipes_defaults(capsys):
    parser = argparse.ArgumentParser()
    add_flags(parser)
    parser.print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {WEIGHTS_IMAGE_SIZE}; --recipe tutorial: {TUTORIAL_IMAGE_SIZE})" in text
