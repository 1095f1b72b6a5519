"""The pipeline: its definition, the data gate, the CLI, and end-to-end runs on the mini set."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from ml_metadata.proto import metadata_store_pb2
from tensorflow_serving.apis import prediction_log_pb2

from components.anomaly_gate import ANOMALIES_FILE, describe_anomalies
from components.report.evaluation import failure_line
from components.report.intervals import wilson_interval
from components.run_knobs import gate_knobs
from contract.artifacts import ON_DEVICE_FILE, TFLITE_DIR, TFLITE_FORMS, tflite_file
from contract.interface import LABELS_ASSET, SERVING_SIGNATURE, WARMUP_FILE
from contract.knobs import TRAINER_KNOBS
from contract.labels import parse_labels
from pipeline.config import PipelineConfig
from pipeline.definition import create_pipeline, eval_config, serving_check_fingerprint
from pipeline.summary import format_summary, serving_check_entry
from serving.server.loader import load_like_tf_serving
from tests.conftest import (
    ALPHA,
    FAST_ARGS,
    MINI,
    REPO,
    SCENES,
    WEIGHTS,
    PipelineRun,
    run_local,
    run_pipeline_on_mini,
    training_config,
    validation_photos,
)
from tests.test_predict import make_photo_folder, read_rows
from tests.test_report_kubeflow import run_report_like_a_kfp_pod
from trainer.export import export_model
from trainer.model import NO_WEIGHTS, build_model


def accuracy_on_validation_photos(export_dir: str) -> float:
    serve = tf.saved_model.load(export_dir).signatures[SERVING_SIGNATURE]
    photos = validation_photos()
    out = serve(images=tf.constant([p.read_bytes() for p, _ in photos]))
    names = [n.decode() for n in out["class_name"].numpy()]
    return float(np.mean([n == label for n, (_, label) in zip(names, photos, strict=True)]))


def write_anomalies(root: Path, split: str, anomalies) -> None:
    (root / f"Split-{split}").mkdir(parents=True)
    (root / f"Split-{split}" / ANOMALIES_FILE).write_bytes(anomalies.SerializeToString())


def test_anomaly_gate_reports_real_tfdv_anomalies(tmp_path):
    train = tfdv.generate_statistics_from_dataframe(
        pd.DataFrame({"label_name": ["cats", "dogs"] * 10, "height": [300] * 20}))
    schema = tfdv.infer_schema(train)
    good = tfdv.generate_statistics_from_dataframe(
        pd.DataFrame({"label_name": ["dogs", "cats"], "height": [200, 400]}))
    bad = tfdv.generate_statistics_from_dataframe(
        pd.DataFrame({"label_name": ["cats", "birds"], "height": [200, 400]}))
    write_anomalies(tmp_path, "eval", tfdv.validate_statistics(good, schema))
    write_anomalies(tmp_path, "test", tfdv.validate_statistics(bad, schema))
    assert describe_anomalies(str(tmp_path), ["eval"]) == []
    problems = describe_anomalies(str(tmp_path), ["eval", "test"])
    assert len(problems) == 1 and problems[0].startswith("test: label_name:")
    assert "birds" in problems[0]


@pytest.mark.parametrize(("correct", "total", "baseline", "blessed"), [
    (27, 30, 0.92, True),   # exactly --min-accuracy 0.9, exactly --max-accuracy-drop 0.02
    (26, 30, 0.92, False),  # one photo short of the lower bound
    (27, 30, 0.93, False),  # a drop of 0.03
    (9, 10, 0.92, True), (900, 1000, 0.92, True), (899, 1000, 0.9, False)])
def test_a_threshold_met_exactly_is_met(correct, total, baseline, blessed):
    """TFMA's own validator, on accuracies as TFMA computes them (float32)."""
    from tensorflow_model_analysis.evaluators import metrics_validator
    from tensorflow_model_analysis.metrics import metric_specs

    config = eval_config(PipelineConfig(min_accuracy=0.9, max_accuracy_drop=0.02), 2)
    value_key, diff_key = sorted(
        metric_specs.metric_thresholds_from_metrics_specs(config.metrics_specs), key=str)
    assert not value_key.is_diff and diff_key.is_diff
    accuracy = np.float32(correct) / np.float32(total)
    metrics = {value_key: accuracy, diff_key: accuracy - np.float32(baseline)}
    result = metrics_validator.validate_metrics(((), metrics), config)
    assert result.validation_ok is blessed, result
    lines = [failure_line(f, total) for f in result.metric_validations_per_slice[0].failures
             ] if not blessed else []
    if correct / total < 0.9 - 1e-9:  # float64 rounding aside
        assert f"accuracy {correct / total:.4f} ({correct} of {total} test photos) < " \
               "--min-accuracy 0.9" in lines
    if correct / total - baseline < -0.02 - 1e-9:
        assert (f"accuracy {baseline - correct / total:.4f} below the baseline's on {total} "
                "test photos, more than --max-accuracy-drop 0.02") in lines


def test_eval_config_gates_overall_accuracy_and_regression():
    cfg = PipelineConfig(min_accuracy=0.85, max_accuracy_drop=0.02)
    config = eval_config(cfg, 2)
    accuracy = next(m for m in config.metrics_specs[0].metrics if '"accuracy"' in m.config)
    (gate,) = accuracy.per_slice_thresholds
    assert list(gate.slicing_specs) == [gate.slicing_specs[0].__class__()]  # overall slice only
    assert gate_knobs(gate.threshold) == {"min_accuracy": 0.85, "max_accuracy_drop": 0.02}
    names = {m.class_name for s in config.metrics_specs for m in s.metrics}
    assert {"ExampleCount", "AUC", "Precision", "Recall", "ConfusionMatrixPlot"} <= names
    multi = eval_config(cfg, 3)
    assert multi.model_specs[0].prediction_key == "probabilities"
    assert {m.class_name for s in multi.metrics_specs for m in s.metrics} >= {
        "SparseCategoricalAccuracy", "MultiClassConfusionMatrixPlot", "AUC"}


def test_pipeline_wiring(tmp_path):
    cfg = PipelineConfig(output_dir=str(tmp_path))
    pipeline = create_pipeline(cfg, str(tmp_path / "records"), ["cats", "dogs"],
                               metadata_path=str(tmp_path / "m.sqlite"))
    ids = [c.id for c in pipeline.components]  # topologically sorted by TFX
    chain = ["ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
             "AnomalyGate", "Trainer"]
    assert sorted(ids) == sorted([*chain, "ServedBaseline", "Evaluator", "ServingCheck",
                                  "OnDeviceGate", "Pusher", "RunReport"])
    assert ids[:len(chain)] == chain  # LocalDagRunner runs them in this order
    assert ids.index("ServedBaseline") < ids.index("Evaluator")
    # The gate's baseline is read from the serving dir after training, for the Evaluator.
    nodes = {c.id: c for c in pipeline.components}
    assert nodes["Evaluator"].inputs["baseline_model"].producer_component_id == "ServedBaseline"
    assert nodes["ServedBaseline"].inputs["model"].producer_component_id == "Trainer"
    assert nodes["ServedBaseline"].exec_properties["serving_model_dir"] == str(
        tmp_path / "serving" / "image_classifier")
    assert sorted(ids[-2:]) == ["Pusher", "RunReport"]  # both after the checks
    # The Pusher pushes the on-device gate's model: the SavedModel with the forms that passed.
    assert nodes["Pusher"].inputs["model"].producer_component_id == "OnDeviceGate"
    assert nodes["OnDeviceGate"].inputs["evaluation"].producer_component_id == "Evaluator"
    scored = create_pipeline(PipelineConfig(output_dir=str(tmp_path), predict_dir="/photos"),
                             str(tmp_path / "records"), ["cats", "dogs"])
    scored_nodes = {c.id: c for c in scored.components}
    assert [c.id for c in scored.components][-2:] == ["BatchPredict", "RunReport"]
    assert scored_nodes["BatchPredict"].exec_properties["predict_dir"] == "/photos"
    assert scored_nodes["BatchPredict"].inputs["pushed_model"].producer_component_id == "Pusher"
    assert scored_nodes["RunReport"].inputs["predictions"].producer_component_id == (
        "BatchPredict")
    without = create_pipeline(PipelineConfig(output_dir=str(tmp_path), on_device=False),
                              str(tmp_path / "records"), ["cats", "dogs"])
    assert "OnDeviceGate" not in {c.id for c in without.components}
    assert {c.id: c for c in without.components}["Pusher"].inputs[
        "model"].producer_component_id == "Trainer"
    trainer = pipeline.components[ids.index("Trainer")]
    assert "AnomalyGate" in {n.id for n in trainer.upstream_nodes}
    pusher = pipeline.components[ids.index("Pusher")]
    destination = json.loads(pusher.exec_properties["push_destination"])
    assert destination["filesystem"]["base_directory"] == str(
        tmp_path / "serving" / "image_classifier")


def test_the_push_needs_both_blessings_and_the_report_shows_the_check(tmp_path):
    pipeline = create_pipeline(PipelineConfig(output_dir=str(tmp_path)), str(tmp_path),
                               ["cats", "dogs"])
    nodes = {c.id: c for c in pipeline.components}
    check, pusher = nodes["ServingCheck"], nodes["Pusher"]
    assert {k: (c.producer_component_id, c.output_key) for k, c in pusher.inputs.items()} == {
        "model": ("OnDeviceGate", "pushed_model_candidate"),
        "model_blessing": ("Evaluator", "blessing"), "infra_blessing": ("ServingCheck", "blessing")}
    assert pusher.inputs["infra_blessing"].type_name == "InfraBlessing"  # what Pusher checks
    assert nodes["RunReport"].inputs["serving_check"].producer_component_id == "ServingCheck"
    assert {k: c.producer_component_id for k, c in check.inputs.items()} == {
        "model": "Trainer", "examples": "ImportExampleGen"}
    # The loader's sources are in the cache key: a changed loader checks a cached model again.
    assert check.exec_properties["code_fingerprint"] == serving_check_fingerprint()
    assert check.exec_properties["num_examples"] >= 1
    with pytest.raises(ValueError, match="unknown serving check 'docker'"):
        create_pipeline(PipelineConfig(output_dir=str(tmp_path)), str(tmp_path), ["a", "b"],
                        serving_check="docker")


def test_summary_says_why_the_serving_check_refused_the_model():
    artifact = metadata_store_pb2.Artifact()
    artifact.custom_properties["blessed"].int_value = 0
    artifact.custom_properties["reason"].string_value = "cannot load x: Could not find variable"
    artifact.custom_properties["warmup_requests"].int_value = 0
    artifact.custom_properties["requests"].int_value = 0
    entry = serving_check_entry("ServingCheck", artifact.custom_properties)
    assert entry == {"component": "ServingCheck", "blessed": False,
                     "reason": "cannot load x: Could not find variable",
                     "warmup_requests": 0, "requests": 0}
    summary = {"ingestion": {"reused": True, "seconds": 0.0, "per_split": {}, "skipped": 0,
                             "report": "r"},
               "components": [], "phase1_val_accuracy": 0.9, "phase2_val_accuracy": None,
               "test_metrics": {}, "blessed": True, "serving_check": entry, "pushed_to": None,
               "report": None, "total_seconds": 1.0}
    text = format_summary(summary)
    assert ("serving check (ServingCheck): NOT blessed: cannot load x: Could not find variable"
            in text)
    assert "pushed to: not pushed (not blessed by the serving check)" in text
    # InfraValidator (the Kubeflow mode) records the blessing only.
    infra = metadata_store_pb2.Artifact()
    infra.custom_properties["blessed"].int_value = 1
    summary["serving_check"] = serving_check_entry("InfraValidator", infra.custom_properties)
    assert "serving check (InfraValidator): blessed (served by TF Serving)" in format_summary(
        summary)
    summary["serving_check"] = None
    assert "serving check: not run" in format_summary(summary)


@pytest.mark.parametrize("flags, message", [
    (["--learning-rate", "-1"], "--learning-rate must be in (0, 1]"),
    (["--max-accuracy-drop", "-5"], "--max-accuracy-drop must be in [0, 1]"),
    (["--image-size", "100000"], "--image-size must be in [32, 1024] pixels"),
    (["--epochs", "0", "--dropout", "1"], "--dropout must be in [0, 1); --epochs must be >= 1"),
    (["--eval-fraction", "0.5", "--test-fraction", "0.5"], "must leave images for training"),
    (["--batch-size", "x"], "invalid int value: 'x'"),
])
def test_bad_flags_are_one_line_usage_errors(flags, message, tmp_path):
    result = run_local("--output-dir", str(tmp_path / "out"), *flags)
    assert result.returncode == 2 and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tfx-image-transfer: error: ")
    assert message in last and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_an_output_dir_that_cannot_be_written_is_a_one_line_error(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    for flag, path in (("--output-dir", a_file), ("--serving-dir", a_file / "serving"),
                       ("--output-dir", "/proc/outputs")):
        result = run_local(flag, str(path), "--data-dir", str(MINI))
        assert result.returncode == 2, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert f"error: {flag} {path}: " in last and "Traceback" not in result.stderr


@pytest.mark.slow
def test_fine_tune_at_beyond_the_base_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    result = run_local("--data-dir", str(MINI), "--output-dir", str(out), "--base-weights",
                       str(WEIGHTS), "--alpha", str(ALPHA), "--fine-tune-at", "99999")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --fine-tune-at 99999 would unfreeze nothing: the base has 154 layers")
    assert not (out / "tfrecords").exists()


def test_help_lists_every_flag():
    result = run_local("--help")
    assert result.returncode == 0
    for flag in ("--data-dir", "--output-dir", "--base-weights", "--alpha", "--image-size",
                 "--epochs", "--fine-tune-epochs", "--fine-tune-at", "--min-accuracy",
                 "--model-name"):
        assert flag in result.stdout


@pytest.mark.slow
def test_offline_defaults_fail_with_a_message_naming_the_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no cached download
    no_data = run_local("--output-dir", str(tmp_path / "a"))
    assert no_data.returncode == 2 and "--data-dir" in no_data.stderr
    no_weights = run_local("--data-dir", str(MINI), "--output-dir", str(tmp_path / "b"))
    assert no_weights.returncode == 2 and "--base-weights" in no_weights.stderr
    assert not (tmp_path / "b" / "pipeline_root").exists()  # failed before any work


def components(summary: dict) -> dict[str, str]:
    return {c["component"]: c["status"] for c in summary["components"]}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """One pipeline run on the mini set; test_end_to_end owns its output dir (it reruns in
    place, as TFX caching needs); other tests copy its serving dir."""
    photos = make_photo_folder(tmp_path_factory.mktemp("predict") / "new photos")
    return run_pipeline_on_mini(tmp_path_factory.mktemp("first_run") / "run",
                                "--predict-dir", str(photos))


@pytest.mark.e2e
def test_end_to_end_train_bless_push_then_refuse_a_bad_model(first_run, tmp_path):
    pipeline_run = first_run
    out = pipeline_run.output_dir
    summary, good = pipeline_run.summary, pipeline_run.process
    assert set(components(summary).values()) == {"COMPLETE"}
    assert len(summary["components"]) == 13
    assert all(c["seconds"] >= 0 for c in summary["components"])
    assert summary["ingestion"]["per_split"] == {"train": 80, "eval": 20, "test": 20}
    assert summary["phase1_val_accuracy"] is not None and summary["phase2_val_accuracy"] >= 0.7
    metrics = summary["test_metrics"]
    assert metrics["example_count"] == 20
    assert metrics["accuracy"] >= 0.7 and {"auc", "precision", "recall"} <= set(metrics)
    assert summary["blessed"] is True
    # The serving check loaded the candidate as TF Serving does, warmup file and requests.
    assert summary["serving_check"] == {"component": "ServingCheck", "blessed": True,
                                        "reason": None, "warmup_requests": 5, "requests": 4}
    check_dir = next((out / "pipeline_root" / "ServingCheck" / "blessing").iterdir())
    assert [p.name for p in check_dir.iterdir()] == ["INFRA_BLESSED"]
    versions = sorted(pipeline_run.model_base_path.iterdir())
    assert [str(v) for v in versions] == [summary["pushed_to"]]
    assert "=== run summary ===" in good.stdout and "blessed: True" in good.stdout
    assert "serving check (ServingCheck): blessed (loaded as TF Serving loads it; 5 warmup" in (
        good.stdout)
    history = json.loads(next((out / "pipeline_root" / "Trainer" / "model_run").glob(
        "*/history.json")).read_text())
    assert history["phase1"]["trainable_weights"] == 2
    assert history["phase2"]["trainable_weights"] > 2

    # The report: one self-contained page whose numbers are the artifacts' and ML Metadata's,
    # the same as the run summary's; the served model agrees with TFMA's confusion matrix.
    report_dir = Path(summary["report"]).parent
    numbers = json.loads((report_dir / "report.json").read_text())
    evaluation = numbers["evaluation"]
    assert {k: round(v, 4) for k, v in evaluation["overall"].items()} == {
        k: metrics[k] for k in evaluation["overall"]}
    assert {"accuracy", "auc", "precision", "recall", "example_count"} <= set(
        evaluation["overall"])
    assert evaluation["served"]["agrees"] is True and np.sum(evaluation["confusion_matrix"]) == 20
    assert evaluation["served"]["accuracy"] == metrics["accuracy"]
    assert [(r["class"], r["count"]) for r in evaluation["per_class"]] == [("cats", 10),
                                                                          ("dogs", 10)]
    # Each headline metric's interval stands on its own photos: precision on the photos
    # predicted as dogs, recall on the dogs, AUC on the dogs against the cats.
    (tn, fp), (fn, tp) = evaluation["confusion_matrix"]
    intervals = summary["intervals"]
    assert intervals == evaluation["intervals"]
    assert [intervals[k]["n"] for k in ("accuracy", "precision", "recall", "auc")] == [
        20, tp + fp, tp + fn, 20]
    assert intervals["auc"]["positives"] == 10
    assert all(intervals[k]["low"] <= metrics[k] <= intervals[k]["high"] for k in intervals)
    assert (f"auc {metrics['auc']} (95% {intervals['auc']['low']:.3f}-"
            f"{intervals['auc']['high']:.3f}, 20 photos)") in good.stdout
    assert numbers["data"]["per_split_total"] == summary["ingestion"]["per_split"]
    assert numbers["data"]["skipped"] == summary["ingestion"]["skipped"]
    steps = {s["component"]: (s["status"], s["seconds"]) for s in numbers["timing"]["steps"]}
    assert steps.pop("RunReport")[0] == "RUNNING"  # the page is written while it runs
    assert steps == {c["component"]: (c["status"], c["seconds"]) for c in summary["components"]
                     if c["component"] != "RunReport"}
    assert numbers["serving"]["path"] == summary["pushed_to"]
    assert numbers["serving"]["version"] == Path(summary["pushed_to"]).name
    assert numbers["serving"]["check"] == {k: v for k, v in summary["serving_check"].items()
                                           if k != "component"}
    for row in numbers["training"]["phases"]:
        kept = history[row["phase"]].get("kept_epoch", row["epochs"])
        assert row["kept_in_phase"] == kept and row["epochs"] == len(
            history[row["phase"]]["history"]["val_accuracy"])
    assert sum(1 for s in evaluation["samples"] if s["true"] == "cats") == 8  # balanced grid
    page = (report_dir / "index.html").read_text()
    assert f"BLESSED and pushed as version {numbers['serving']['version']}" in page
    assert f"<td>accuracy</td><td class='n'>{metrics['accuracy']:.4g}</td>" in page
    check = subprocess.run([sys.executable, "scripts/render-report", "--no-browser",
                            str(report_dir / "index.html")], capture_output=True, text=True,
                           cwd=REPO)
    assert check.returncode == 0, check.stderr
    # The same page and the metrics for Kubeflow's UI (system.HTML, system.Metrics).
    (html_value,) = (out / "pipeline_root" / "RunReport" / "html").glob("*/value")
    assert html_value.read_text() == page
    # The same step as a Kubeflow pod runs it (TFX's V2 entrypoint, the compiled spec's types):
    # the page is a file at the system.HTML uri, the metrics are system.Metrics' metadata.
    pod = run_report_like_a_kfp_pod(out, summary["ingestion"]["output_dir"], tmp_path / "pod")
    pod_metrics = pod["output"]["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert {k: round(pod_metrics[k], 4) for k in evaluation["overall"]} == {
        k: metrics[k] for k in evaluation["overall"]}
    assert Path(pod["uris"]["html"]).read_text().startswith("<!doctype html>")
    pod_numbers = json.loads((Path(pod["uris"]["report"]) / "report.json").read_text())
    assert pod_numbers["serving"] == numbers["serving"]
    assert pod_numbers["evaluation"] == evaluation and pod_numbers["data"] == numbers["data"]

    # The pushed version loads the TF Serving way (session, saver, warmup) and its
    # serving_default answers real photos exactly as TF2's loader does.
    assert (versions[0] / WARMUP_FILE).is_file()
    served, warmup = load_like_tf_serving(str(versions[0]))
    photos = [p.read_bytes() for p, _ in validation_photos()[:8]]
    try:
        session_out = served.run(SERVING_SIGNATURE, {"images": photos})
    finally:
        served.close()
    tf2_out = tf.saved_model.load(str(versions[0])).signatures[SERVING_SIGNATURE](
        images=tf.constant(photos))
    assert warmup == summary["serving_check"]["warmup_requests"]
    assert set(session_out) == set(tf2_out)
    for name, value in tf2_out.items():
        if value.dtype == tf.string:
            assert list(session_out[name]) == list(value.numpy()), name
        else:
            np.testing.assert_allclose(session_out[name], value.numpy(), atol=1e-5,
                                       err_msg=name)

    # The on-device forms: scored on the test split beside the SavedModel, pushed beside it
    # when within the allowed drop, each with a row in the report and a summary line.
    record = json.loads((versions[0] / TFLITE_DIR / ON_DEVICE_FILE).read_text())
    assert record["saved_model"]["photos"] == 20
    assert record["saved_model"]["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-4)
    assert record["input"]["dtype"] == "uint8" and record["input"]["shape"][0] == 1
    assert (versions[0] / TFLITE_DIR / LABELS_ASSET).read_text().split() == ["cats", "dogs"]
    for form in TFLITE_FORMS:
        entry = record["forms"][form]
        assert entry["photos"] == 20 and 0 <= entry["accuracy"] <= 1
        assert entry["passed"] == (entry["drop"] <= 0.005 + 1e-6)
        assert (versions[0] / TFLITE_DIR / tflite_file(form)).exists() == entry["passed"]
        assert f"on-device {form}: test accuracy {entry['accuracy']:.4f}" in good.stdout
    assert record["forms"]["int8"]["accuracy"] >= 0.7  # the gate's --min-accuracy, here
    rows = {r["form"]: r for r in numbers["on_device"]["rows"]}
    assert list(rows) == ["SavedModel", *TFLITE_FORMS]
    assert rows["int8"]["bytes"] < rows["float16"]["bytes"] < rows["SavedModel"]["bytes"]
    assert "<h3>Exported forms</h3>" in page

    # --predict-dir: the run's model classified the folder after the push, with the rows and
    # skips tfx-image-transfer-predict writes for the pushed version, and the report links them.
    predicted = summary["predictions"]
    assert predicted["rows"] == 40 and sum(predicted["skipped"].values()) == 5
    assert predicted["version"] == versions[0].name
    command = subprocess.run(
        [sys.executable, "-m", "predict.cli", predicted["source"], "--model",
         str(pipeline_run.model_base_path), "--output-dir", str(tmp_path / "command")],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert command.returncode == 0, command.stderr[-2000:]
    step_rows, step_table, step_skipped = read_rows(Path(predicted["folder"]))
    command_rows, command_table, command_skipped = read_rows(tmp_path / "command")
    assert step_skipped == command_skipped and len(step_rows) == 40
    assert [(r["path"], r["class"]) for r in step_rows] == [
        (r["path"], r["class"]) for r in command_rows]
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in step_rows],
                               [list(r["probabilities"].values()) for r in command_rows],
                               atol=1e-5)
    assert f"predictions: 40 photos of {predicted['source']} classified by pushed version" in (
        good.stdout)
    assert numbers["predictions"]["files"]["csv"] == str(Path(predicted["folder"])
                                                         / "predictions.csv")
    assert f"href='file://{predicted['folder']}/predictions.csv'" in page

    # The pushed model classifies real photos (raw JPEG bytes) better than a random-init one.
    pushed_accuracy = accuracy_on_validation_photos(str(versions[0]))
    random_dir = str(tmp_path / "random")
    untrained_cfg = training_config(alpha=ALPHA, base_weights=NO_WEIGHTS)
    untrained = build_model(2, untrained_cfg)
    export_model(untrained, ["cats", "dogs"], untrained_cfg.image_size, random_dir)
    random_accuracy = accuracy_on_validation_photos(random_dir)
    assert pushed_accuracy >= 0.8 and pushed_accuracy >= random_accuracy + 0.2, (
        pushed_accuracy, random_accuracy)

    # Unchanged rerun: nothing converted again; the serving dir changed (it holds the pushed
    # version now), so the gate's baseline is read again and the Evaluator reruns.
    rerun = run_local("--data-dir", str(MINI), "--output-dir", str(out), *FAST_ARGS)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["ingestion"]["reused"] is True
    statuses = components(summary)
    assert statuses["Trainer"] == statuses["ImportExampleGen"] == "CACHED"
    assert statuses["ServingCheck"] == "CACHED" and summary["serving_check"]["blessed"] is True
    # Re-blessed against itself, but the serving dir gets no duplicate version.
    assert summary["pushed_to"] == str(versions[0])
    assert sorted((out / "serving" / "image_classifier").iterdir()) == versions

    # A deliberately bad model (random-init base, tiny step) is neither blessed nor pushed.
    bad_args = [*FAST_ARGS, "--base-weights", "none", "--learning-rate", "1e-6",
                "--fine-tune-epochs", "0"]
    bad = run_local("--data-dir", str(MINI), "--output-dir", str(out), *bad_args)
    assert bad.returncode == 0, bad.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert components(summary)["Trainer"] == "COMPLETE"
    assert summary["blessed"] is False and summary["pushed_to"] is None
    assert summary["serving_check"]["blessed"] is True  # servable, just not good enough
    assert summary["test_metrics"]["accuracy"] < 0.7
    assert summary["test_metrics"]["accuracy_diff"] < 0  # compared with the served version
    assert summary["baseline"]["version"] == versions[0].name
    json.loads((out / "run_summary.json").read_text(), parse_constant=pytest.fail)  # no NaN
    assert sorted((out / "serving" / "image_classifier").iterdir()) == versions
    assert "pushed to: not pushed (not blessed by the Evaluator: accuracy " in bad.stdout


@pytest.mark.e2e
def test_a_worse_model_from_a_new_output_dir_is_not_pushed_over_the_served_one(first_run,
                                                                             tmp_path):
    # Another output dir (its own ML Metadata, no blessed model in it) and the same serving
    # dir: the gate compares with what is served there, not with this output dir's history.
    serving = tmp_path / "serving"
    shutil.copytree(first_run.model_base_path, serving / "image_classifier")
    (served,) = sorted((serving / "image_classifier").iterdir())
    # A random-init base barely trained; --min-accuracy 0, so only the baseline can refuse it.
    worse = [*FAST_ARGS, "--base-weights", "none", "--learning-rate", "1e-6",
             "--fine-tune-epochs", "0", "--min-accuracy", "0"]
    result = run_local("--data-dir", str(MINI), "--output-dir", str(tmp_path / "new"),
                       "--serving-dir", str(serving), *worse)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "new" / "run_summary.json").read_text())
    assert summary["baseline"] == {"version": served.name, "path": str(served),
                                   "note": f"served version {served.name} ({served})"}
    assert components(summary)["ServedBaseline"] == "COMPLETE"
    assert summary["blessed"] is False and summary["pushed_to"] is None
    drop = -summary["test_metrics"]["accuracy_diff"]
    assert drop > 0.01 and summary["test_metrics"]["accuracy"] < first_run.summary[
        "test_metrics"]["accuracy"]
    assert sorted((serving / "image_classifier").iterdir()) == [served]  # nothing pushed
    assert f"no-regression baseline: served version {served.name} ({served})" in result.stdout
    accuracy, count = (summary["test_metrics"][k] for k in ("accuracy", "example_count"))
    assert (f"pushed to: not pushed (not blessed by the Evaluator: accuracy {accuracy} "
            f"({round(accuracy * count)} of {int(count)} test photos) is {drop:.4f} below the "
            ) in result.stdout
    assert f"of served version {served.name} ({served}), more than --max-accuracy-drop 0.01)" in (
        result.stdout)


def warmup_requests(version: Path) -> list[prediction_log_pb2.PredictionLog]:
    records = tf.data.TFRecordDataset(str(version / WARMUP_FILE))
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in records]


def write_pattern_images(folder: Path, count: int) -> None:
    """A third class for a multi-class run: synthetic stripes and noise, clearly not photos."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(count):
        x = np.linspace(0, rng.uniform(2, 12) * np.pi, 120)
        stripes = (127 + 127 * np.sin(x[None, :] + x[:, None] * rng.uniform(-1, 1)))
        image = np.stack([stripes, rng.uniform(0, 255, (120, 120)), stripes[::-1]], axis=-1)
        Image.fromarray(image.astype(np.uint8)).save(folder / f"pattern_{i}.png")


@pytest.mark.e2e
def test_end_to_end_multiclass_class_folder_layout(tmp_path):
    data = tmp_path / "data"
    for cls in ("cats", "dogs"):
        shutil.copytree(MINI / "train" / cls, data / cls)
    write_pattern_images(data / "striped patterns", 40)  # a class name with a space
    out = tmp_path / "run"
    result = run_local("--data-dir", str(data), "--output-dir", str(out), *FAST_ARGS,
                       "--min-accuracy", "0.5", "--model-name", "three_classes")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert set(components(summary).values()) == {"COMPLETE"}
    assert summary["ingestion"]["per_split"] == {"train": 96, "eval": 12, "test": 12}
    metrics = summary["test_metrics"]
    assert metrics["example_count"] == 12 and metrics["accuracy"] >= 0.5
    # Clean names; no overall precision, recall or AUC for three classes, macro averages.
    assert set(metrics) == {"accuracy", "top_k_accuracy", "macro_auc", "macro_precision",
                            "macro_recall", "example_count"}, metrics
    assert metrics["top_k_accuracy"] >= metrics["accuracy"]
    low, high = summary["accuracy_interval"]
    assert low < metrics["accuracy"] < high or metrics["accuracy"] in (low, high)
    assert (f"test accuracy {metrics['accuracy']}: {round(metrics['accuracy'] * 12)} of 12 "
            f"photos, 95% interval {low:.3f}-{high:.3f}") in result.stdout
    assert "test metrics: top_k_accuracy " in result.stdout
    assert "macro_average" not in result.stdout
    assert summary["blessed"] is True and summary["serving_check"]["blessed"] is True
    (version,) = (out / "serving" / "three_classes").iterdir()
    serve = tf.saved_model.load(str(version)).signatures[SERVING_SIGNATURE]
    out_ = serve(images=tf.constant([(data / "striped patterns" / "pattern_0.png").read_bytes()]))
    assert out_["probabilities"].shape == (1, 3)
    assert parse_labels((version / "assets" / LABELS_ASSET).read_text()) == [
        "cats", "dogs", "striped patterns"]
    # The report reads the classes by whole lines, and TFMA's one-vs-rest metrics per class.
    numbers = json.loads((Path(summary["report"]).parent / "report.json").read_text())
    assert numbers["classes"] == ["cats", "dogs", "striped patterns"]
    per_class = numbers["evaluation"]["per_class"]
    assert sum(r["count"] for r in per_class) == 12
    assert all(r["auc"] is not None and r["recall"] is not None for r in per_class if r["count"])
    assert numbers["evaluation"]["served"]["agrees"] is True
    assert "plain averages over the 3 classes; top-2 accuracy" in numbers["evaluation"]["averaging"]
    # The warmup requests name the model they warm up (--model-name reaches the Trainer).
    (log,) = {log.predict_log.request.model_spec.name for log in warmup_requests(version)}
    assert log == "three_classes"


def test_trainer_cache_key_follows_the_trainer_code(tmp_path):
    from pipeline.definition import CODE_FINGERPRINT_KEY, trainer_code_fingerprint

    cfg = PipelineConfig(output_dir=str(tmp_path))
    pipeline = create_pipeline(cfg, str(tmp_path), ["a", "b"])
    trainer = next(c for c in pipeline.components if c.id == "Trainer")
    custom = json.loads(trainer.exec_properties["custom_config"])
    assert custom[CODE_FINGERPRINT_KEY] == trainer_code_fingerprint()
    knobs = {k: trainer.exec_properties[k] for k in TRAINER_KNOBS}  # the run knobs
    assert custom["training"] | knobs == cfg.training_config().to_dict()
    assert custom["classes"] == ["a", "b"]


def test_anomaly_gate_component_stops_the_run(tmp_path):
    from tfx.types import artifact_utils
    from tfx.types.standard_artifacts import ExampleAnomalies

    from components.anomaly_gate import AnomalyGate, DataAnomaliesError

    schema = tfdv.infer_schema(tfdv.generate_statistics_from_dataframe(
        pd.DataFrame({"label_name": ["cats", "dogs"] * 5})))
    bad = tfdv.generate_statistics_from_dataframe(pd.DataFrame({"label_name": ["horses"]}))
    write_anomalies(tmp_path, "eval", tfdv.validate_statistics(bad, schema))
    artifact = ExampleAnomalies()
    artifact.uri = str(tmp_path)
    artifact.split_names = artifact_utils.encode_split_names(["eval"])
    executor = AnomalyGate.EXECUTOR_SPEC.executor_class()
    with pytest.raises(DataAnomaliesError) as error:
        executor.Do({"anomalies": [artifact]}, {}, {})
    assert "training stopped" in str(error.value)
    assert "eval: label_name:" in str(error.value) and "horses" in str(error.value)


def test_without_baseline_the_served_baseline_is_left_out(tmp_path):
    cfg = PipelineConfig(output_dir=str(tmp_path), compare_to_baseline=False)
    pipeline = create_pipeline(cfg, str(tmp_path), ["a", "b"])
    ids = [c.id for c in pipeline.components]
    assert "ServedBaseline" not in ids and "Evaluator" in ids
    evaluator = pipeline.components[ids.index("Evaluator")]
    assert "baseline_model" not in evaluator.inputs


@pytest.mark.slow
def test_a_failing_component_is_named_in_one_line(tmp_path):
    # TFRecords damaged on disk after ingestion marked them complete (bit rot, a bad copy on a
    # share): ingestion reuses them, and ImportExampleGen fails reading them at run time.
    from ingestion.beam_options import beam_pipeline_args
    from pipeline import run_local as runner
    from pipeline.data_source import ingest

    args = ["--data-dir", str(MINI), "--output-dir", str(tmp_path / "out"), *FAST_ARGS]
    ingested = ingest(runner.parse_args(args), beam_pipeline_args(1))
    shard = sorted((Path(ingested.output_dir) / "train").iterdir())[0]
    data = shard.read_bytes()
    shard.write_bytes(data[:12] + bytes(b ^ 0x5A for b in data[12:4000]) + data[4000:])
    result = run_local(*args)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ImportExampleGen failed: ValueError: Not a valid TFRecord"), last
    assert len(last) < 400  # not the damaged record Beam quotes
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert summary["error"] == last.removeprefix("error: ")
    assert components(summary) == {"ImportExampleGen": "FAILED"}  # nothing ran after it


@pytest.mark.e2e
def test_six_classes_of_real_scenes_read_cleanly_and_a_threshold_met_exactly_blesses(tmp_path):
    if not SCENES.is_dir():
        pytest.skip(f"no {SCENES} (the six-class scene photos are not downloadable)")
    out = tmp_path / "run"
    args = ["--data-dir", str(SCENES), "--output-dir", str(out), *FAST_ARGS]
    result = run_local(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["classes"] == ["buildings", "forest", "glacier", "mountain", "sea", "street"]
    metrics = summary["test_metrics"]
    assert set(metrics) == {"accuracy", "top_k_accuracy", "macro_auc", "macro_precision",
                            "macro_recall", "example_count"}, metrics
    n = metrics["example_count"]
    assert n == summary["ingestion"]["per_split"]["test"]
    k = round(metrics["accuracy"] * n)
    assert summary["accuracy_interval"] == pytest.approx(wilson_interval(k, n), abs=1e-4)
    assert summary["blessed"] is (k / n >= 0.7)
    printed = result.stdout[result.stdout.index("=== run summary ==="):]
    assert f"test accuracy {metrics['accuracy']}: {k} of {n} photos, 95% interval" in printed
    assert "macro_average" not in printed and "\n_" not in json.dumps(summary)
    report = json.loads(next(out.rglob("report.json")).read_text())
    assert [r["class"] for r in report["evaluation"]["per_class"]] == summary["classes"]
    assert report["evaluation"]["top_k"] == 3 and len(report["evaluation"]["confusion_matrix"]) == 6
    # An interval for every headline metric, none for a metric not shown.
    intervals = summary["intervals"]
    assert set(intervals) == set(metrics) - {"example_count"}
    assert all(intervals[k]["low"] <= metrics[k] <= intervals[k]["high"] for k in intervals)
    assert all(f"{k} {metrics[k]} (95% " in printed for k in intervals if k != "accuracy")
    columns = np.sum(report["evaluation"]["confusion_matrix"], axis=0)
    for row, predicted in zip(report["evaluation"]["per_class"], columns, strict=True):
        # Recall on the class's photos; precision on those above 0.5, which are a part of
        # the photos the class is the likeliest for.
        assert row["intervals"]["recall"]["n"] == row["count"]
        assert row["intervals"]["precision"] is None or (
            row["intervals"]["precision"]["n"] <= predicted)
        assert row["intervals"]["auc"]["positives"] == row["count"]

    # The same model gated at exactly its accuracy (k/n in float64; TFMA's is float32): met.
    result = run_local(*args, "--min-accuracy", repr(k / n))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    again = json.loads((out / "run_summary.json").read_text())
    assert components(again)["Trainer"] == "CACHED"
    assert again["test_metrics"]["accuracy"] == metrics["accuracy"]
    assert again["blessed"] is True, again
