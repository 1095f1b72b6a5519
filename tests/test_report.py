"""The run report's page builder on synthetic inputs: sections, numbers, ten long class names,
the history with and without the kept epoch, and the render check's own failures."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from components.report import history as hist
from components.report import page, plots
from components.report.build import data_numbers, serving_numbers
from components.report.evaluation import _clean_name, small_split_warning
from components.report.intervals import auc_entry, proportion_entry
from components.report.predictions import balanced_sample, confident_mistakes, reliability
from tests.conftest import REPO

RENDER = REPO / "scripts" / "render-report"
TEN = ["golden retriever", "tabby cat with a very long descriptive name", "border collie",
       "siamese cat", "labrador retriever", "persian cat", "german shepherd dog",
       "maine coon", "beagle & <friends>", "norwegian forest cat"]


def phase(epochs: int, kept: int | None = None, val0: float = 0.5) -> dict:
    record = {"history": {"accuracy": [0.5 + 0.01 * i for i in range(epochs)],
                          "val_accuracy": [val0 + 0.02 * i for i in range(epochs)],
                          "loss": [1.0 - 0.05 * i for i in range(epochs)],
                          "val_loss": [1.1 - 0.05 * i for i in range(epochs)]},
              "trainable_weights": 2, "seconds": 3.5}
    if kept is not None:
        record["kept_epoch"] = kept
    return record


def test_history_without_kept_epoch_keeps_the_last():
    history = {"config": {"epochs": 3}, "phase1": phase(3), "phase2": phase(2, val0=0.7)}
    rows = hist.phase_rows(history)
    assert [(r["first_epoch"], r["epochs"], r["kept_epoch"]) for r in rows] == [(1, 3, 3),
                                                                               (4, 2, 5)]
    assert rows[1]["val_accuracy"] == pytest.approx(0.72)
    assert len(hist.series(history, "val_loss")) == 5


def test_history_with_kept_epoch_and_early_stopping():
    # Phase 1 stopped after 4 of its epochs and kept the 2nd; phase 2 kept its 1st.
    history = {"config": {"epochs": 10}, "phase1": phase(4, kept=2), "phase2": phase(3, kept=1)}
    rows = hist.phase_rows(history)
    assert [(r["first_epoch"], r["kept_in_phase"], r["kept_epoch"]) for r in rows] == [
        (1, 2, 2), (5, 1, 5)]
    assert rows[0]["val_accuracy"] == pytest.approx(0.52)
    assert [r["exported"] for r in rows] == [False, True]
    assert hist.phase_rows({"phase1": phase(2, kept=2)})[0]["kept_epoch"] == 2  # no phase 2
    assert plots.learning_curves(history).startswith(b"\x89PNG")


def test_no_fine_tuning_epoch_kept_exports_phase_one():
    # kept_epoch 0 in phase 2: no fine-tuning epoch beat phase 1, whose weights were kept.
    history = {"phase1": phase(3, kept=2), "phase2": phase(2, kept=0)}
    rows = hist.phase_rows(history)
    assert [(r["kept_epoch"], r["exported"]) for r in rows] == [(2, True), (None, False)]
    assert rows[1]["val_accuracy"] is None and rows[0]["val_accuracy"] == pytest.approx(0.52)
    assert "none (no epoch beat the previous phase)" in page._kept(rows[1])
    assert plots.learning_curves(history).startswith(b"\x89PNG")


def test_the_sample_grid_is_balanced_even_when_one_class_comes_first():
    labels = np.array([0] * 30 + [1] * 30)  # the old grid showed only the first 16: all cats
    picked = balanced_sample(labels, 2, 16)
    assert len(picked) == 16 and sorted(np.bincount(labels[picked])) == [8, 8]
    ten = np.repeat(np.arange(10), 3)
    assert np.bincount(ten[balanced_sample(ten, 10, 16)]).tolist() == [2] * 10
    assert balanced_sample(np.array([1, 1]), 2, 4) == [0, 1]  # a class without test images


def test_mistakes_most_confident_first_and_reliability():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6], [0.7, 0.3]])
    assert confident_mistakes(labels, probabilities, 5) == [0, 3]
    numbers = reliability(labels, probabilities, bins=10)
    assert sum(numbers["count"]) == 4 and numbers["count"][8] == 1  # 0.9 falls in (0.8, 0.9]
    # |acc - conf| weighted: 0.9 wrong, 0.8 right, 0.6 right, 0.7 wrong.
    assert numbers["ece"] == pytest.approx((0.9 + 0.2 + 0.4 + 0.7) / 4)


def jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def synthetic(classes: list[str], blessed: bool = True, diff: float | None = None) -> tuple:
    """Numbers, figures and thumbnails as build_report makes them, without a model."""
    k = len(classes)
    rng = np.random.default_rng(0)
    matrix = (np.eye(k, dtype=int) * 5 + rng.integers(0, 2, (k, k))).tolist()
    counts = [sum(r) for r in matrix]
    overall = {"accuracy": 0.8125, "auc": 0.93, "precision": 0.8, "recall": 0.79,
               "example_count": sum(counts)}
    if diff is not None:
        overall["accuracy_diff"] = diff
    items = [{"index": i, "path": f"validation/{c}/img {i}.jpg", "true": c,
              "predicted": classes[(i + 1) % k] if i % 3 == 0 else c, "probability": 0.91}
             for i, c in enumerate(classes)]
    history = {"config": {"epochs": 2, "learning_rate": 1e-5, "base_weights": "w.h5"},
               "phase1": phase(2), "phase2": phase(2, kept=1, val0=0.7)}
    ingestion = {"root": "/data/pets", "per_split": {s: {c: 7 for c in classes}
                                                       for s in ("train", "eval", "test")},
                 "per_split_total": {s: 7 * k for s in ("train", "eval", "test")},
                 "written": 21 * k, "skipped": 2,
                 "skipped_by_reason": {"not an image": 1, "empty file": 1},
                 "files": [{"path": "a/notes.txt", "status": "skipped", "reason": "not an image"},
                           {"path": "b/empty.jpg", "status": "skipped", "reason": "empty file"},
                           {"path": "c/ok.jpg", "status": "written"}]}
    signature = {"name": "serving_default",
                 "inputs": {"images": {"dtype": "string", "shape": [None]}},
                 "outputs": {"probabilities": {"dtype": "float32", "shape": [None, k]}}}
    check = {"blessed": True, "reason": None, "warmup_requests": 5, "requests": 4}
    pushed = {"pushed": blessed, "path": "/srv/models/pets/1700000000" if blessed else None,
              "version": "1700000000" if blessed else None}
    calibration = reliability(np.arange(20) % k, rng.dirichlet(np.ones(k), 20))
    numbers = {
        "classes": classes, "verdict": {"blessed": blessed},
        "data": data_numbers(ingestion, [], ["train", "eval", "test"]),
        "training": {"phases": hist.phase_rows(history), "config": history["config"]},
        "evaluation": {"overall": overall,
                       "per_class": [{"class": c, "count": n, "precision": 0.8, "recall": None,
                                      "auc": 0.9} for c, n in zip(classes, counts, strict=True)],
                       "confusion_matrix": matrix, "averaging": "macro-averaged",
                       "gate": {"min_accuracy": 0.9, "max_accuracy_drop": 0.01},
                       "validation_ok": blessed,
                       "failures": [] if blessed else ["accuracy 0.8125 (lower_bound 0.9)"],
                       "served": {"accuracy": 0.8125, "confusion_matrix": matrix, "agrees": True},
                       "calibration": calibration, "samples": items, "mistakes": items[:2]},
        "serving": serving_numbers(pushed, signature, "/data/pets/validation/x y.jpg", check,
                                   blessed),
        "timing": {"steps": [{"component": "Trainer", "status": "COMPLETE", "seconds": 30.0},
                             {"component": "ImportExampleGen", "status": "CACHED",
                              "seconds": 0.5}], "note": "note"}}
    figures = {"learning_curves": plots.learning_curves(history),
               "confusion_matrix": plots.confusion_matrix(matrix, classes, "test"),
               "reliability": plots.reliability_diagram(calibration)}
    thumbs = {i: jpeg((20 * i % 255, 80, 160)) for i in range(k)}
    return numbers, figures, thumbs


def check(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RENDER), str(path), "--no-browser"],
                          capture_output=True, text=True, timeout=60)


def test_ten_classes_with_long_names_stay_readable(tmp_path):
    numbers, figures, thumbs = synthetic(TEN)
    text = page.render_html(numbers, figures, thumbs)
    (tmp_path / "index.html").write_text(text)
    result = check(tmp_path / "index.html")
    assert result.returncode == 0, result.stderr
    assert "ok:" in result.stdout and "15 inlined images" in result.stdout  # 3 figures + 12
    # Each name whole and escaped: in the data table, the per-class table, the gallery.
    for name in TEN:
        escaped = page._e(name)
        assert text.count(f"<td>{escaped}</td>") == 2, name
    assert "beagle &amp; &lt;friends&gt;" in text and "<friends>" not in text
    # The confusion matrix grows with the classes and wraps long names on its axes.
    two = Image.open(io.BytesIO(plots.confusion_matrix([[1, 0], [0, 1]], TEN[:2], "t")))
    ten = Image.open(io.BytesIO(figures["confusion_matrix"]))
    assert ten.width >= 2 * two.width * 0.9 and ten.height > 600
    assert plots.wrap(TEN[1]).count("\n") >= 2 and max(map(len, plots.wrap(TEN[1]).split())) <= 16
    # Sections in the page's documented order, after the verdict.
    order = [text.index(f"id='{s}'") for s in ("verdict", "data", "training", "evaluation",
                                                 "serving", "timing")]
    assert order == sorted(order)


def test_the_page_shows_the_numbers_it_is_given():
    numbers, figures, thumbs = synthetic(["cats", "dogs"], diff=-0.0125)
    text = page.render_html(numbers, figures, thumbs)
    ok, headline, details = page.verdict(numbers)
    assert ok and headline == "BLESSED and pushed as version 1700000000"
    assert details[0] == ("test accuracy 0.8125 < threshold 0.9, baseline 0.825 (-0.0125; "
                          "allowed drop 0.01)")
    for fragment in ("<td>train</td>" not in text and "<th>train</th>", "<td class='n'>7</td>",
                     "a/notes.txt", "not an image", "learning_rate</td><td>1e-05",
                     "<td class='n'>0.8125</td>", "/srv/models/pets/1700000000",
                     "--model pets --version 1700000000 &#x27;/data/pets/validation/x y.jpg&#x27;",
                     "/v1/models/pets/versions/1700000000:predict",
                     "$(base64 -w0 &#x27;/data/pets/validation/x y.jpg&#x27;)",
                     "<td>ImportExampleGen</td><td>CACHED</td><td>cached</td>",
                     "validation/dogs/img 1.jpg", "recall"):
        assert fragment and fragment in text, fragment
    markdown = page.render_markdown(numbers)
    assert markdown.startswith("## BLESSED and pushed") and "| accuracy | 0.8125 |" in markdown


def test_each_metric_shows_its_interval_and_the_photos_it_stands_on():
    numbers, figures, thumbs = synthetic(["cats", "dogs"])
    ev = numbers["evaluation"]
    ev["intervals"] = {"accuracy": proportion_entry(0.9, 30), "auc": auc_entry(0.93, 14, 16),
                       "precision": proportion_entry(0.8, 15)}
    ev["per_class"][1]["intervals"] = {"precision": proportion_entry(0.8, 15), "recall": None,
                                       "auc": auc_entry(0.93, 14, 16)}
    text = page.render_html(numbers, figures, thumbs)
    for fragment in ("<td class='n'>0.744-0.965</td><td class='n'>30 test photos</td>",
                     "<td class='n'>15 predicted dogs</td>", "14 dogs against 16 cats",
                     "<td class='n'>0.8 (0.548-0.929)</td><td class='n'>n/a</td>",
                     "recall on the class's photos"):
        assert fragment in text, fragment
    markdown = page.render_markdown(numbers)
    assert "| accuracy | 0.8125 | 0.744-0.965 |" in markdown


def test_a_refused_model_says_why_and_offers_no_query():
    numbers, figures, thumbs = synthetic(["cats", "dogs"], blessed=False)
    ok, headline, details = page.verdict(numbers)
    assert not ok and headline == "NOT BLESSED by the Evaluator, not pushed"
    assert "failed: accuracy 0.8125 (lower_bound 0.9)" in details
    assert "no baseline to compare with" in details[0]
    text = page.render_html(numbers, figures, thumbs)
    assert "Not pushed: not blessed by the Evaluator." in text and "curl" not in text


def test_the_render_check_fails_on_a_missing_or_external_image(tmp_path):
    numbers, figures, thumbs = synthetic(["cats", "dogs"])
    good = page.render_html(numbers, figures, thumbs)
    broken = good.replace(page.data_uri(figures["reliability"]), "data:image/png;base64,", 1)
    external = good.replace(page.data_uri(figures["reliability"]), "http://x/r.png", 1)
    wrong_type = good.replace(page.data_uri(figures["reliability"]),
                              page.data_uri(thumbs[0], "image/png"), 1)
    for name, text, problem in (("broken", broken, "empty or not a PNG/JPEG"),
                                ("external", external, "not an inlined data: URI"),
                                ("type", wrong_type, "png URI holds jpeg"),
                                ("nosection", good.replace("id='timing'", ""), "#timing")):
        (tmp_path / f"{name}.html").write_text(text)
        result = check(tmp_path / f"{name}.html")
        assert result.returncode == 1 and problem in result.stderr, (name, result.stderr)


def test_data_numbers_list_skipped_files_with_reasons():
    files = [{"path": f"f{i}", "status": "skipped", "reason": "corrupt"} for i in range(60)]
    numbers = data_numbers({"files": files, "skipped": 60}, ["test: label_name: new value"],
                           ["train", "eval", "test"])
    assert len(numbers["skipped_files"]) == 50 and numbers["skipped_files"][0] == {
        "path": "f0", "reason": "corrupt"}
    assert json.loads(json.dumps(numbers))["anomalies"] == ["test: label_name: new value"]
    assert data_numbers(None, [], [])["source"].startswith("unknown")


def test_the_small_split_warning_says_when_the_gate_cannot_tell():
    warning = small_split_warning(0.9, 30, 0.85)
    assert warning == ("the test split is too small for the gate to tell this model from "
                       "--min-accuracy 0.85: 27 of 30 photos right, 95% interval 0.744-0.965; "
                       "more test photos (--validation-test-fraction, a bigger validation "
                       "folder) narrow it")
    assert "\n" not in warning
    assert small_split_warning(0.99, 500, 0.9) is None  # the interval is far above
    assert small_split_warning(0.5, 500, 0.9) is None  # far below: a clear refusal
    assert small_split_warning(None, 30, 0.9) is None
    assert small_split_warning(0.9, 30, None) is None


def test_tfma_metric_names_come_out_clean():
    assert _clean_name("accuracy") == "accuracy"
    assert _clean_name("macro_average: true\n_auc") == "macro_auc"
    assert _clean_name("top_3_accuracy") == "top_k_accuracy"
    assert _clean_name("example_count") == "example_count"
