"""TFX's Trainer and Evaluator with the knobs users change between runs as parameters of
their own, so a compiled Kubeflow pipeline takes them as typed runtime parameters.

TFX's Kubeflow compiler makes a runtime parameter only of a whole exec property, and the stock
components hold these knobs inside one property each: the Trainer every training knob in its
custom_config (a JSON string), the Evaluator its accuracy gate in its eval_config. Here each
knob is an int or float exec property beside them. When the component runs, its executor checks
the values against the same ranges as the flags (contract/knobs.py), writes them into
custom_config or eval_config, and then runs TFX's own executor unchanged.

No `from __future__ import annotations` here: TFX reads ExecutionParameter types at runtime.
"""

import json
from collections.abc import Mapping
from typing import Any

from tensorflow_model_analysis.proto import config_pb2
from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.orchestration import data_types
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import json_utils, proto_utils

from components.served_baseline import ServedBaselineEvaluatorExecutor
from contract.knobs import GATE_KNOBS, GATE_TOLERANCE, TRAINER_KNOBS, range_problems
from trainer.config import TrainingConfig
from trainer.task import CONFIG_KEY

# The metric the gate knobs set: its lower bound, and the most it may drop below the baseline's.
GATED_METRIC = "accuracy"

# Kubeflow runtime parameters by knob name: each takes the place of its knob's value.
RuntimeParameters = Mapping[str, data_types.RuntimeParameter]


class RunKnobError(ValueError):
    """A run knob's value is out of its range."""


def _with_knobs(spec_class: type, knobs: dict[str, type]) -> type:
    """A ComponentSpec class: spec_class with one required exec property per knob."""
    parameters = {name: ExecutionParameter(type=kind) for name, kind in knobs.items()}
    return type(f"{spec_class.__name__}WithRunKnobs", (spec_class,),
                {"PARAMETERS": {**spec_class.PARAMETERS, **parameters}})


TrainerSpec = _with_knobs(standard_component_specs.TrainerSpec, TRAINER_KNOBS)
EvaluatorSpec = _with_knobs(standard_component_specs.EvaluatorSpec, GATE_KNOBS)


def split_knobs(exec_properties: dict[str, Any], knobs: dict[str, type]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Takes the knobs out of a component's exec properties and checks their ranges.

    Args:
      exec_properties: what the executor received.
      knobs: TRAINER_KNOBS or GATE_KNOBS.

    Returns:
      (the knobs' values, the other exec properties).

    Raises:
      RunKnobError: one line naming every value out of its range.
    """
    values = {name: kind(exec_properties[name]) for name, kind in knobs.items()}
    problems = range_problems(values, as_flags=False)
    if problems:
        raise RunKnobError("invalid run parameters: " + "; ".join(problems))
    return values, {k: v for k, v in exec_properties.items() if k not in knobs}


def trainer_properties(exec_properties: dict[str, Any]) -> dict[str, Any]:
    """The Trainer's exec properties as TFX's Trainer executor takes them: custom_config's
    training config completed with the run knobs.

    Args:
      exec_properties: what the Trainer's executor received, knobs included.

    Returns:
      The exec properties without the knobs, their values in custom_config.

    Raises:
      RunKnobError: a knob's value is out of its range.
    """
    values, properties = split_knobs(exec_properties, TRAINER_KNOBS)
    custom_config = json_utils.loads(properties[standard_component_specs.CUSTOM_CONFIG_KEY])
    custom_config[CONFIG_KEY] = {**custom_config[CONFIG_KEY], **values}
    properties[standard_component_specs.CUSTOM_CONFIG_KEY] = json_utils.dumps(custom_config)
    return properties


class TrainerExecutor(trainer_executor.GenericExecutor):
    """TFX's Trainer executor, with the run knobs written into custom_config first."""

    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        """Trains as TFX does, with custom_config's training config completed by the knobs."""
        super().Do(input_dict, output_dict, trainer_properties(exec_properties))


class TrainerWithRunKnobs(base_component.BaseComponent):
    """TFX's Trainer (a run_fn over Examples), with TRAINER_KNOBS as exec properties."""

    SPEC_CLASS = TrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(TrainerExecutor)

    def __init__(self, examples: types.BaseChannel, run_fn: str, training: TrainingConfig,
                 custom_config: dict[str, Any],
                 runtime_parameters: RuntimeParameters | None = None):
        """The Trainer node.

        Args:
          examples: the Examples channel (train and eval splits).
          run_fn: the training function's import path.
          training: the run's training config: TRAINER_KNOBS become exec properties, the
            other fields custom_config's CONFIG_KEY entry.
          custom_config: the rest of custom_config, as TFX's Trainer takes it.
          runtime_parameters: those of TRAINER_KNOBS that a Kubeflow run sets; others in it
            are ignored (the Evaluator's).
        """
        values = training.to_dict()
        knobs = {k: (runtime_parameters or {}).get(k, values.pop(k)) for k in TRAINER_KNOBS}
        spec = TrainerSpec(
            examples=examples, run_fn=run_fn,
            custom_config=json_utils.dumps({**custom_config, CONFIG_KEY: values}),
            train_args=trainer_pb2.TrainArgs(), eval_args=trainer_pb2.EvalArgs(),
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun), **knobs)
        super().__init__(spec=spec)


def set_gate(eval_config: config_pb2.EvalConfig, min_accuracy: float,
             max_accuracy_drop: float) -> config_pb2.EvalConfig:
    """The eval config with GATED_METRIC's thresholds set to the gate knobs (widened by
    GATE_TOLERANCE; gate_knobs reads them back).

    Args:
      eval_config: a config with a threshold on the metric named GATED_METRIC.
      min_accuracy: its value threshold's lower bound.
      max_accuracy_drop: its change threshold: the most it may be below the baseline's.

    Returns:
      A changed copy.

    Raises:
      ValueError: no threshold is set on GATED_METRIC.
    """
    config = config_pb2.EvalConfig()
    config.CopyFrom(eval_config)
    gated = 0
    for metrics_spec in config.metrics_specs:
        for metric in metrics_spec.metrics:
            if json.loads(metric.config or "{}").get("name") != GATED_METRIC:
                continue
            for per_slice in metric.per_slice_thresholds:
                threshold = per_slice.threshold
                threshold.value_threshold.lower_bound.value = min_accuracy - GATE_TOLERANCE
                threshold.change_threshold.direction = config_pb2.MetricDirection.HIGHER_IS_BETTER
                threshold.change_threshold.absolute.value = -(max_accuracy_drop + GATE_TOLERANCE)
                gated += 1
    if not gated:
        raise ValueError(f"the eval config has no threshold on {GATED_METRIC!r}")
    return config


def gate_knobs(threshold: config_pb2.MetricThreshold) -> dict[str, float | None]:
    """The gate knobs a threshold written by set_gate stands for.

    Args:
      threshold: GATED_METRIC's threshold in an eval config.

    Returns:
      {"min_accuracy", "max_accuracy_drop"}; None where the threshold sets none.
    """
    knobs: dict[str, float | None] = {"min_accuracy": None, "max_accuracy_drop": None}
    if threshold.value_threshold.HasField("lower_bound"):
        knobs["min_accuracy"] = round(
            threshold.value_threshold.lower_bound.value + GATE_TOLERANCE, 9)
    if threshold.change_threshold.HasField("absolute"):
        knobs["max_accuracy_drop"] = round(
            -threshold.change_threshold.absolute.value - GATE_TOLERANCE, 9)
    return knobs


def evaluator_properties(exec_properties: dict[str, Any]) -> dict[str, Any]:
    """The Evaluator's exec properties as TFX's Evaluator executor takes them: eval_config
    with the gate at the knobs' values.

    Args:
      exec_properties: what the Evaluator's executor received, knobs included.

    Returns:
      The exec properties without the knobs, their values in eval_config's gate.

    Raises:
      RunKnobError: a knob's value is out of its range.
    """
    values, properties = split_knobs(exec_properties, GATE_KNOBS)
    key = standard_component_specs.EVAL_CONFIG_KEY
    config = proto_utils.json_to_proto(properties[key], config_pb2.EvalConfig())
    properties[key] = proto_utils.proto_to_json(set_gate(config, **values))
    return properties


class EvaluatorExecutor(ServedBaselineEvaluatorExecutor):
    """The Evaluator's executor (ServedBaselineEvaluatorExecutor), with the gate knobs written
    into eval_config first."""

    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        """Evaluates as TFX does, with the accuracy gate at the knobs' values."""
        super().Do(input_dict, output_dict, evaluator_properties(exec_properties))


class EvaluatorWithRunKnobs(base_component.BaseComponent):
    """TFX's Evaluator with the served baseline (see served_baseline.py) and GATE_KNOBS as exec
    properties."""

    SPEC_CLASS = EvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(EvaluatorExecutor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel,
                 baseline_model: types.BaseChannel | None,
                 eval_config: config_pb2.EvalConfig, example_splits: list[str],
                 knobs: Mapping[str, float], runtime_parameters: RuntimeParameters | None = None):
        """The Evaluator node.

        Args:
          examples: the Examples channel.
          model: the candidate model.
          baseline_model: the baseline, or None to gate on the value threshold alone.
          eval_config: TFMA's config, with a threshold on GATED_METRIC; when the component
            runs, the knobs' values replace that threshold's.
          example_splits: the splits to evaluate.
          knobs: the run's value of each of GATE_KNOBS.
          runtime_parameters: those of GATE_KNOBS that a Kubeflow run sets; others in it are
            ignored (the Trainer's).
        """
        set_gate(eval_config, 0.0, 0.0)  # only checks that there is a gate for the knobs
        spec = EvaluatorSpec(
            examples=examples, model=model, baseline_model=baseline_model,
            eval_config=eval_config,
            example_splits=json_utils.dumps(example_splits),
            fairness_indicator_thresholds=json_utils.dumps(None),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            **{k: (runtime_parameters or {}).get(k, knobs[k]) for k in GATE_KNOBS})
        super().__init__(spec=spec)
