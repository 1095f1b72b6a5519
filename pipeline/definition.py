"""`create_pipeline`: the one definition of the TFX pipeline, shared by every runner."""

from __future__ import annotations

import hashlib
from pathlib import Path

import tensorflow_data_validation as tfdv
from tensorflow_model_analysis.proto import config_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import base_component, executor_spec

from components.anomaly_gate import AnomalyGate
from components.batch_predict import BATCH_PREDICT_NODE, BatchPredict
from components.on_device import OnDeviceGate
from components.on_device_record import ON_DEVICE_NODE
from components.pusher import IdempotentPusherExecutor
from components.report import RunReportGen
from components.report.evaluation import COUNTS_AT_THRESHOLD
from components.run_knobs import (
    GATED_METRIC,
    EvaluatorWithRunKnobs,
    RuntimeParameters,
    TrainerWithRunKnobs,
    set_gate,
)
from components.served_baseline import ServedBaseline, served_snapshot
from components.serving_check import (
    CHECK_EXAMPLES,
    CHECK_SPLIT,
    KubeflowInfraValidator,
    ServingCheck,
)
from contract import features
from contract.interface import EXAMPLES_SIGNATURE, POSITIVE_PROBABILITY, PROBABILITIES
from contract.knobs import GATE_KNOBS, PER_RUN_KNOBS
from pipeline.config import (
    KUBERNETES_CHECK,
    SERVING_CHECKS,
    SESSION_CHECK,
    TF_SERVING_IMAGE,
    PipelineConfig,
)
from trainer.task import CLASSES_KEY, MODEL_NAME_KEY

RUN_FN = "trainer.task.run_fn"
CODE_FINGERPRINT_KEY = "code_fingerprint"
# InfraValidator: an image pull and a model load per try; a model that fails fails each try.
INFRA_VALIDATION = tfx.proto.ValidationSpec(max_loading_time_seconds=600, num_tries=3)


def source_fingerprint(*patterns: str) -> str:
    """Hash of the repository's files matching the glob patterns (paths and contents).

    Args:
      patterns: globs relative to the repository root, e.g. "trainer/*.py".

    Returns:
      16 hex digits.
    """
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted({p for pattern in patterns for p in root.glob(pattern)}):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def trainer_code_fingerprint() -> str:
    """Hash of the sources run_fn runs: the trainer and contract packages.

    The Trainer runs `run_fn` by import path, so TFX's cache key does not see code changes;
    passing this hash in custom_config makes a changed trainer retrain instead of reusing a
    stale cached model.

    Returns:
      16 hex digits.
    """
    return source_fingerprint("trainer/*.py", "contract/*.py")


def serving_check_fingerprint() -> str:
    """Hash of the serving check's sources (the check and the TF-Serving-style loader), for
    the same reason: a changed loader checks a cached model again.

    Returns:
      16 hex digits.
    """
    return source_fingerprint("components/serving_check.py", "serving/server/loader.py",
                              "serving/session_bundle.py", "serving/errors.py")


# More than two classes: how many of the likeliest classes top-k accuracy looks at (at most N-1).
TOP_K = 3


def eval_config(cfg: PipelineConfig, num_classes: int) -> config_pb2.EvalConfig:
    """TFMA on the test split: accuracy (gated), AUC, precision, recall, count, confusion;
    with more than two classes, top-k accuracy and the one-vs-rest metrics per class.

    Args:
      cfg: the run's config (min_accuracy and max_accuracy_drop gate the accuracy).
      num_classes: 2 evaluates the positive-class probability with binary metrics; more,
        the probabilities with multi-class ones (one-vs-rest, macro-averaged).

    Returns:
      The Evaluator's EvalConfig: the overall slice and one slice per label name.
    """
    binary = num_classes == 2
    model_spec = config_pb2.ModelSpec(
        signature_name=EXAMPLES_SIGNATURE, label_key=features.LABEL_KEY,
        prediction_key=POSITIVE_PROBABILITY if binary else PROBABILITIES)
    accuracy_class = "BinaryAccuracy" if binary else "SparseCategoricalAccuracy"
    gate = config_pb2.MetricThreshold()  # set_gate sets its bounds, below
    metrics = [
        config_pb2.MetricConfig(class_name="ExampleCount"),
        # The gate applies to the overall slice only, not to the per-class slices.
        config_pb2.MetricConfig(class_name=accuracy_class, config=f'{{"name": "{GATED_METRIC}"}}',
                          per_slice_thresholds=[config_pb2.PerSliceMetricThreshold(
                              slicing_specs=[config_pb2.SlicingSpec()], threshold=gate)]),
    ]
    specs = []
    if binary:
        metrics += [config_pb2.MetricConfig(class_name=c) for c in ("AUC", "Precision", "Recall")]
        metrics += [config_pb2.MetricConfig(class_name="ConfusionMatrixPlot"),
                    config_pb2.MetricConfig(class_name="ConfusionMatrixAtThresholds",
                                      config=COUNTS_AT_THRESHOLD)]
    else:
        k = min(TOP_K, num_classes - 1)
        metrics += [config_pb2.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
                    config_pb2.MetricConfig(class_name="SparseTopKCategoricalAccuracy",
                                            config=f'{{"k": {k}, "name": "top_{k}_accuracy"}}')]
        # One-vs-rest AUC/precision/recall, macro-averaged over the classes; in a spec of
        # their own (TFMA cannot average counts), the counts at the threshold that give each
        # class's precision its sample size.
        one_vs_rest = config_pb2.BinarizationOptions(class_ids={"values": list(range(num_classes))})
        specs.append(config_pb2.MetricsSpec(
            metrics=[config_pb2.MetricConfig(class_name=c) for c in ("AUC", "Precision", "Recall")],
            binarize=one_vs_rest,
            aggregate=config_pb2.AggregationOptions(
                macro_average=True, class_weights={i: 1.0 for i in range(num_classes)})))
        specs.append(config_pb2.MetricsSpec(
            metrics=[config_pb2.MetricConfig(class_name="ConfusionMatrixAtThresholds",
                                             config=COUNTS_AT_THRESHOLD)],
            binarize=one_vs_rest))
    specs.insert(0, config_pb2.MetricsSpec(metrics=metrics))
    config = config_pb2.EvalConfig(
        model_specs=[model_spec],
        slicing_specs=[config_pb2.SlicingSpec(),
                       config_pb2.SlicingSpec(feature_keys=[features.LABEL_NAME_KEY])],
        metrics_specs=specs)
    return set_gate(config, cfg.min_accuracy, cfg.max_accuracy_drop)


def serving_check_component(mode: str, model: tfx.dsl.Channel, examples: tfx.dsl.Channel,
                            model_name: str) -> base_component.BaseComponent:
    """The step that blesses a servable model: an InfraBlessing under outputs["blessing"].

    Args:
      mode: SESSION_CHECK (ServingCheck, any runner) or KUBERNETES_CHECK (TFX's InfraValidator
        starting TF_SERVING_IMAGE in a pod; Kubeflow Pipelines only).
      model: the Trainer's model channel.
      examples: the Examples channel; requests come from its test split.
      model_name: the model name the model server serves it under (InfraValidator).

    Returns:
      The component, with id "ServingCheck" or "InfraValidator".

    Raises:
      ValueError: mode is neither.
    """
    if mode == SESSION_CHECK:
        return ServingCheck(model=model, examples=examples, num_examples=CHECK_EXAMPLES,
                            code_fingerprint=serving_check_fingerprint()).with_id("ServingCheck")
    if mode != KUBERNETES_CHECK:
        raise ValueError(f"unknown serving check {mode!r}; one of {', '.join(SERVING_CHECKS)}")
    image_name, tag = TF_SERVING_IMAGE.rsplit(":", 1)
    return KubeflowInfraValidator(
        model=model,
        examples=examples,
        serving_spec=tfx.proto.ServingSpec(
            tensorflow_serving=tfx.proto.TensorFlowServing(image_name=image_name, tags=[tag]),
            kubernetes=tfx.proto.KubernetesConfig(),
            model_name=model_name),
        validation_spec=INFRA_VALIDATION,
        # LOAD_AND_QUERY: real Predict requests on from_examples, one test example each.
        request_spec=tfx.proto.RequestSpec(
            tensorflow_serving=tfx.proto.TensorFlowServingRequestSpec(
                signature_names=[EXAMPLES_SIGNATURE]),
            split_name=CHECK_SPLIT, num_examples=CHECK_EXAMPLES),
    ).with_id("InfraValidator")


def create_pipeline(cfg: PipelineConfig, examples_dir: str, class_names: list[str],
                    metadata_path: str | None = None,
                    beam_pipeline_args: list[str] | None = None,
                    serving_check: str = SESSION_CHECK,
                    runtime_parameters: RuntimeParameters | None = None) -> tfx.dsl.Pipeline:
    """The pipeline over TFRecords in examples_dir/{train,eval,test}/ (see ingestion).

    Args:
      cfg: the run's config.
      examples_dir: the converted TFRecords (a folder ingestion wrote).
      class_names: the class names by label index.
      metadata_path: the SQLite ML Metadata file; None leaves the connection to the runner
        (Kubeflow).
      beam_pipeline_args: Beam options for the components that run Beam.
      serving_check: picks the step whose InfraBlessing gates the push beside the
        Evaluator's blessing (see `serving_check_component`).
      runtime_parameters: knobs a Kubeflow run sets (some of contract.knobs.PER_RUN_KNOBS),
        as RuntimeParameters; the Trainer and Evaluator take them in place of cfg's values.

    Returns:
      The TFX pipeline, for any runner.

    Raises:
      ValueError: a runtime parameter is no knob a run may set.
    """
    unknown = sorted(set(runtime_parameters or {}) - set(PER_RUN_KNOBS))
    if unknown:
        raise ValueError(f"no knob a run may set: {unknown}; those are {list(PER_RUN_KNOBS)}")
    example_gen = tfx.components.ImportExampleGen(
        input_base=examples_dir,
        input_config=tfx.proto.Input(splits=[
            tfx.proto.Input.Split(name=s, pattern=f"{s}/*") for s in features.SPLITS]))
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"],
        stats_options=tfdv.StatsOptions(feature_allowlist=list(features.STATISTICS_FEATURES)))
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    anomaly_gate = AnomalyGate(anomalies=example_validator.outputs["anomalies"])

    # The run knobs are the Trainer's and Evaluator's own parameters (runtime parameters on
    # Kubeflow); custom_config holds the rest of the training config.
    trainer = TrainerWithRunKnobs(
        run_fn=RUN_FN,
        examples=example_gen.outputs["examples"],
        training=cfg.training_config(),
        custom_config={CLASSES_KEY: list(class_names), MODEL_NAME_KEY: cfg.model_name,
                       CODE_FINGERPRINT_KEY: trainer_code_fingerprint()},
        runtime_parameters=runtime_parameters).with_id("Trainer")
    trainer.add_upstream_node(anomaly_gate)

    baseline_nodes = []
    if cfg.compare_to_baseline:
        # The baseline is what the serving dir serves now, not this output dir's last blessed
        # model (see components/served_baseline.py).
        baseline_nodes.append(ServedBaseline(
            model=trainer.outputs["model"], serving_model_dir=cfg.serving_model_dir,
            allow_no_baseline=int(cfg.allow_no_baseline),
            snapshot=served_snapshot(cfg.serving_model_dir)).with_id("ServedBaseline"))
    # Without a baseline the Evaluator drops the change threshold and gates on accuracy alone.
    evaluator = EvaluatorWithRunKnobs(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline_nodes[0].outputs["baseline"] if baseline_nodes else None,
        eval_config=eval_config(cfg, len(class_names)),
        example_splits=["test"],
        knobs={k: getattr(cfg, k) for k in GATE_KNOBS},
        runtime_parameters=runtime_parameters).with_id("Evaluator")
    check = serving_check_component(serving_check, trainer.outputs["model"],
                                    example_gen.outputs["examples"], cfg.model_name)
    on_device_nodes = []
    if cfg.on_device:
        # The model to push: the SavedModel with the on-device forms that passed their gate.
        on_device_nodes.append(OnDeviceGate(
            model=trainer.outputs["model"], examples=example_gen.outputs["examples"],
            evaluation=evaluator.outputs["evaluation"],
            max_accuracy_drop=cfg.on_device_max_drop).with_id(ON_DEVICE_NODE))
    to_push = (on_device_nodes[0].outputs["pushed_model_candidate"] if on_device_nodes
               else trainer.outputs["model"])
    pusher = tfx.components.Pusher(
        model=to_push,
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=check.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=cfg.serving_model_dir)),
        custom_executor_spec=executor_spec.ExecutorClassSpec(IdempotentPusherExecutor))

    # After the push: the run's model classifies the --predict-dir photos.
    predict_nodes = []
    if cfg.predict_dir:
        predict_nodes.append(BatchPredict(
            model=to_push, pushed_model=pusher.outputs["pushed_model"],
            predict_dir=cfg.predict_dir).with_id(BATCH_PREDICT_NODE))

    # Last, after the push: the page shows where the model went and every step's time.
    report = RunReportGen(
        examples=example_gen.outputs["examples"], model=to_push,
        model_run=trainer.outputs["model_run"], blessing=evaluator.outputs["blessing"],
        evaluation=evaluator.outputs["evaluation"], serving_check=check.outputs["blessing"],
        pushed_model=pusher.outputs["pushed_model"],
        anomalies=example_validator.outputs["anomalies"], ingested_dir=examples_dir,
        predictions=predict_nodes[0].outputs["predictions"] if predict_nodes else None,
        metadata_path=metadata_path or "", pipeline_name=cfg.pipeline_name,
    ).with_id("RunReport")

    components = [example_gen, statistics_gen, schema_gen, example_validator, anomaly_gate,
                  trainer, *baseline_nodes, evaluator, check, *on_device_nodes, pusher,
                  *predict_nodes, report]
    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name,
        pipeline_root=cfg.pipeline_root,
        components=components,
        enable_cache=cfg.enable_cache,
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
            if metadata_path else None),
        beam_pipeline_args=beam_pipeline_args or [])
