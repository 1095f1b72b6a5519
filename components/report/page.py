"""The report page: one self-contained HTML file (figures and photos inlined as data: URIs),
and a short Markdown version for Kubeflow's UI. Built from the report's numbers alone
(report.json), so the page shows exactly what the artifacts hold."""

from __future__ import annotations

import base64
import html
from typing import Any

from components.report.evaluation import OVERALL
from contract.knobs import meets_min_accuracy

SECTIONS = ("Data", "Training", "Evaluation", "Serving", "Timing")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.verdict{padding:.8em 1em;border-radius:6px;font-size:1.15em}
.ok{background:#e5f5e5;border:1px solid #5a5} .bad{background:#fbe7e7;border:1px solid #c55}
.verdict ul{margin:.4em 0 0 0;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums}
td,th{max-width:28em;overflow-wrap:anywhere}
th{overflow-wrap:normal}
code,pre{background:#f6f6f6;font-size:.9em} pre{padding:.6em;white-space:pre-wrap;
overflow-wrap:anywhere}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:172px;font-size:.8em;overflow-wrap:anywhere}
figure img{width:160px;height:160px;object-fit:contain;background:#eee;display:block}
.right{border:3px solid #5a5} .wrong{border:3px solid #c33}
.path{color:#555;font-family:monospace;font-size:.9em}
nav a{margin-right:1em} .note{color:#555;font-size:.9em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any, digits: int = 4) -> str:
    """A number as the page prints it: None as "n/a", floats rounded, ints as they are.

    Args:
      value: a number, None or text.
      digits: significant digits for floats.

    Returns:
      The text.
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """The bytes as a data: URI.

    Args:
      data: the file's bytes.
      mime: its media type.

    Returns:
      "data:<mime>;base64,<...>".
    """
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def metric_label(name: str, top_k: int | None) -> str:
    """An overall metric's name as the page shows it (top_k_accuracy with its k)."""
    return f"top-{top_k} accuracy" if name == "top_k_accuracy" and top_k else name


def _table(header: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class='n'>{_e(fmt(v))}</td>" if i >= numeric_from
                         else f"<td>{_e(fmt(v))}</td>" for i, v in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def verdict(numbers: dict[str, Any]) -> tuple[bool, str, list[str]]:
    """The verdict line: pushed or not and why, accuracy against the threshold and baseline.

    Args:
      numbers: the report's numbers (report.json).

    Returns:
      (pushed, headline, details).
    """
    v, ev = numbers["verdict"], numbers["evaluation"]
    overall, gate = ev["overall"], ev["gate"]
    accuracy, threshold = overall.get("accuracy"), gate.get("min_accuracy")
    serving = numbers["serving"]
    compare = "n/a" if accuracy is None or threshold is None else (
        ">=" if meets_min_accuracy(accuracy, threshold) else "<")
    parts = [f"test accuracy {fmt(accuracy)} {compare} threshold {fmt(threshold)}"]
    diff = overall.get("accuracy_diff")
    if diff is not None and accuracy is not None:
        parts.append(f"baseline {fmt(accuracy - diff)} ({diff:+.4f}; allowed drop "
                     f"{fmt(gate.get('max_accuracy_drop'))})")
    else:
        parts.append("no baseline to compare with")
    if serving["pushed"]:
        headline = f"BLESSED and pushed as version {serving['version']}"
    elif v["blessed"] is False:
        headline = "NOT BLESSED by the Evaluator, not pushed"
    elif serving["check"] and serving["check"].get("blessed") is False:
        headline = "NOT PUSHED: the serving check refused the model"
    else:
        headline = "NOT PUSHED"
    details = [", ".join(parts), f"serving check: {serving['check_text']}",
               *(f"failed: {f}" for f in ev["failures"]),
               *([f"warning: {ev['warning']}"] if ev.get("warning") else [])]
    return serving["pushed"], headline, details


def interval_text(entry: dict[str, Any] | None, brackets: str = "") -> str:
    """A 95% interval entry as "low-high" (in brackets when given, e.g. "()"); "" without.

    Args:
      entry: {"low", "high", ...} (components.report.intervals), or None.
      brackets: an opening and a closing character, or "".

    Returns:
      The text.
    """
    if not entry:
        return ""
    text = f"{entry['low']:.3f}-{entry['high']:.3f}"
    return f"{brackets[0]}{text}{brackets[1]}" if brackets else text


def _counted(metric: str, entry: dict[str, Any] | None, classes: list[str]) -> str:
    """Which test photos an overall metric's interval stands on."""
    if not entry:
        return ""
    n = entry["n"]
    if metric == "precision":
        return f"{n} predicted {classes[1]}"
    if metric == "recall":
        return f"{n} {classes[1]}"
    if metric == "auc":
        return f"{entry['positives']} {classes[1]} against {n - entry['positives']} {classes[0]}"
    return f"{n} test photos"


def _verdict_html(numbers: dict[str, Any]) -> str:
    ok, headline, details = verdict(numbers)
    items = "".join(f"<li>{_e(d)}</li>" for d in details)
    return (f"<div class='verdict {'ok' if ok else 'bad'}' id='verdict'><b>{_e(headline)}</b>"
            f"<ul>{items}</ul></div>")


def _data_html(numbers: dict[str, Any]) -> str:
    d, classes = numbers["data"], numbers["classes"]
    splits = list(d["per_split"])
    rows = [[c, *(d["per_split"][s].get(c, 0) for s in splits),
             sum(d["per_split"][s].get(c, 0) for s in splits)] for c in classes]
    rows.append(["all classes", *(d["per_split_total"][s] for s in splits),
                 sum(d["per_split_total"].values())])
    out = [f"<p>From <span class='path'>{_e(d['source'])}</span>: {d['written']} images "
           f"written, {d['skipped']} skipped.</p>", _table(["class", *splits, "total"], rows)]
    if d["skipped_by_reason"]:
        out.append("<h3>Skipped files</h3>")
        out.append(_table(["reason", "files"], [[k, v] for k, v in d["skipped_by_reason"].items()]))
        listed = d["skipped_files"]
        out.append(_table(["file", "reason"], [[f["path"], f["reason"]] for f in listed],
                          numeric_from=99))
        if d["skipped"] > len(listed):
            out.append(f"<p class='note'>and {d['skipped'] - len(listed)} more in the "
                       f"ingestion report.</p>")
    anomalies = d["anomalies"]
    out.append("<h3>Data validation (ExampleValidator)</h3>")
    out.append("<ul>" + "".join(f"<li>{_e(a)}</li>" for a in anomalies) + "</ul>" if anomalies
               else f"<p>No anomaly in {', '.join(map(_e, d['validated_splits']))} against "
                    "the schema inferred from the statistics.</p>")
    return "".join(out)


def _kept(row: dict[str, Any]) -> str:
    if row["kept_epoch"] is None:
        return "none (no epoch beat the previous phase)"
    return f"{row['kept_epoch']}{' (exported)' if row['exported'] else ''}"


def _training_html(numbers: dict[str, Any], figures: dict[str, bytes]) -> str:
    t = numbers["training"]
    rows = [[r["phase"], f"{r['first_epoch']}-{r['first_epoch'] + r['epochs'] - 1}",
             r["epochs"], _kept(r), r["val_accuracy"], r["val_loss"],
             r["trainable_weights"], r["seconds"]] for r in t["phases"]]
    config = [[k, str(v)] for k, v in t["config"].items()]
    return ("<img alt='learning curves' src='" + data_uri(figures["learning_curves"]) + "'>"
            + _table(["phase", "epochs (run axis)", "epochs run", "kept epoch",
                      "val accuracy (kept)", "val loss (kept)", "trainable weights", "seconds"],
                     rows)
            + "<h3>Configuration</h3>" + _table(["knob", "value"], config, numeric_from=99))


def _gallery(items: list[dict[str, Any]], thumbs: dict[int, bytes], show_path: bool) -> str:
    figures = []
    for item in items:
        right = item["true"] == item["predicted"]
        caption = (f"true: {_e(item['true'])}<br>predicted: {_e(item['predicted'])} "
                   f"({item['probability']:.2f})")
        if show_path:
            caption += f"<br><span class='path'>{_e(item['path'])}</span>"
        src = data_uri(thumbs[item["index"]], "image/jpeg")
        figures.append(f"<figure><img class='{'right' if right else 'wrong'}' "
                       f"alt='{_e(item['path'])}' src='{src}'>"
                       f"<figcaption>{caption}</figcaption></figure>")
    return "<div class='grid'>" + "".join(figures) + "</div>"


def _evaluation_html(numbers: dict[str, Any], figures: dict[str, bytes],
                     thumbs: dict[int, bytes]) -> str:
    ev = numbers["evaluation"]
    o = ev["overall"]
    intervals, classes = ev.get("intervals") or {}, numbers["classes"]
    overall = _table(["metric", "value", "95% interval", "photos it counts"],
                     [[metric_label(k, ev.get("top_k")), o[k],
                       interval_text(intervals.get(k)), _counted(k, intervals.get(k), classes)]
                      for k in OVERALL if k in o])
    per_class = _table(["class", "test images", "precision (95% interval)",
                        "recall (95% interval)", "AUC one-vs-rest (95% interval)"],
                       [[r["class"], r["count"],
                         *(" ".join(filter(None, (fmt(r[m]), interval_text(
                             r.get("intervals", {}).get(m), "()"))))
                           for m in ("precision", "recall", "auc"))]
                        for r in ev["per_class"]])
    per_class += ("<p class='note'>Intervals: precision on the photos predicted as the class "
                  "(probability above 0.5), recall on the class's photos, AUC on the class's "
                  "photos against the rest.</p>")
    served = ev["served"]
    agreement = ("<p class='note'>The served model's predictions on the raw test images give "
                 f"the same confusion matrix (accuracy {fmt(served['accuracy'])}).</p>"
                 if served["agrees"] else
                 "<p class='bad'>The served model's predictions on the raw test images give a "
                 f"different confusion matrix: {_e(served['confusion_matrix'])} (accuracy "
                 f"{fmt(served['accuracy'])}).</p>")
    mistakes = ("<p class='note'>Paths are relative to the data folder, "
                f"<span class='path'>{_e(numbers['data']['source'])}</span>.</p>"
                + _gallery(ev["mistakes"], thumbs, show_path=True) if ev["mistakes"]
                else "<p>No test image was misclassified.</p>")
    return (f"<p>TFMA on the test split ({fmt(o.get('example_count'), 0)} images).</p>"
            + overall + f"<p class='note'>{_e(ev['averaging'])}.</p>"
            + "<h3>Per class</h3>" + per_class
            + "<h3>Confusion matrix</h3><img alt='confusion matrix' src='"
            + data_uri(figures["confusion_matrix"]) + "'>" + agreement
            + "<h3>Calibration</h3><img alt='reliability diagram' src='"
            + data_uri(figures["reliability"]) + "'>"
            + f"<h3>Test predictions ({len(ev['samples'])}, balanced across classes)</h3>"
            + _gallery(ev["samples"], thumbs, show_path=False)
            + "<h3>Most confident mistakes</h3>" + mistakes)


def _serving_html(numbers: dict[str, Any]) -> str:
    s = numbers["serving"]
    sig = s["signature"]
    tensors = [[f"{kind}: {name}", spec["dtype"], str(spec["shape"])]
               for kind in ("inputs", "outputs") for name, spec in sig[kind].items()]
    out = []
    if s["pushed"]:
        out.append(f"<p>Pushed <b>{_e(s['model_name'])}</b> version <b>{_e(s['version'])}</b> "
                   f"to <span class='path'>{_e(s['path'])}</span>.</p>")
    else:
        out.append(f"<p>Not pushed: {_e(s['why_not'])}.</p>")
    out.append(f"<p>Serving check: {_e(s['check_text'])}</p>")
    out.append(f"<h3>Signature <code>{_e(sig['name'])}</code></h3>")
    out.append(_table(["tensor", "dtype", "shape"], tensors, numeric_from=99))
    out.append(_on_device_html(numbers.get("on_device")))
    out.append(_predictions_html(numbers.get("predictions")))
    if s["pushed"]:
        out.append("<h3>Query it</h3><p>With TF Serving (or tfx-image-transfer-server) "
                   "serving the model base path, REST on 8501, gRPC on 8500:</p>")
        out.append(f"<pre>{_e(s['curl'])}</pre><pre>{_e(s['client'])}</pre>")
    return "".join(out)


def on_device_rows(on_device: dict[str, Any]) -> list[list[Any]]:
    """The exported forms' table rows: form, size, test accuracy (95% interval, photos),
    accuracy below the SavedModel's, pushed (or why not)."""
    return [[r["form"], f"{r['bytes'] / 2**20:.2f} MB" if r.get("bytes") else "",
             f"{fmt(r.get('accuracy'))} ({interval_text(_interval(r))}, {r.get('photos')} "
             "photos)" if r.get("accuracy") is not None else "",
             fmt(r.get("drop")) if r["form"] != "SavedModel" else "",
             "yes" if r["pushed"] else f"no: {r['reason']}" if r["reason"] else "no"]
            for r in on_device["rows"]]


def _interval(row: dict[str, Any]) -> dict[str, float] | None:
    bounds = row.get("interval")
    return {"low": bounds[0], "high": bounds[1]} if bounds else None


def _link(path: str) -> str:
    """A link to a file of the run: local paths as file: URLs, URIs (gs://) as text."""
    if "://" in path:
        return f"<span class='path'>{_e(path)}</span>"
    return f"<a class='path' href='file://{_e(path)}'>{_e(path)}</a>"


def predictions_line(predictions: dict[str, Any]) -> str:
    """One line: how many photos were classified and skipped, by which model."""
    skipped = predictions["skipped"]
    reasons = "; ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
    by = (f"pushed version {predictions['version']}" if predictions["version"]
          else "this run's model (not pushed)")
    return (f"{predictions['rows']} photos of {predictions['source']} classified by {by}, "
            f"{sum(skipped.values())} files skipped" + (f" ({reasons})" if reasons else ""))


def _predictions_html(predictions: dict[str, Any] | None) -> str:
    if not predictions:
        return ""
    files = "".join(f"<li>{_link(path)}</li>" for path in predictions["files"].values())
    return (f"<h3>Batch predictions</h3><p>{_e(predictions_line(predictions))}.</p>"
            f"<ul>{files}</ul>")


def _on_device_html(on_device: dict[str, Any] | None) -> str:
    if not on_device:
        return ""
    spec = on_device["input"]
    return ("<h3>Exported forms</h3>"
            + _table(["form", "size", "test accuracy (95% interval, photos)",
                      "below the SavedModel by", "pushed"], on_device_rows(on_device),
                     numeric_from=1)
            + f"<p class='note'>On-device (TFLite) models: input <code>{_e(spec['name'])}</code> "
              f"{_e(spec['dtype'])} {_e(spec['shape'])}, {_e(spec['preprocessing'])}; output "
              f"<code>{_e(on_device['output']['name'])}</code>; labels in "
              f"{_e(on_device['labels'])} beside them. Each is pushed only within "
              f"{fmt(on_device['max_accuracy_drop'])} of the SavedModel's test accuracy.</p>")


def _timing_html(numbers: dict[str, Any]) -> str:
    t = numbers["timing"]
    if not t["steps"]:
        return f"<p>{_e(t['note'])}</p>"
    rows = [[s["component"], s["status"], "cached" if s["status"] == "CACHED" else "run",
             s["seconds"]] for s in t["steps"]]
    note = f"<p class='note'>{_e(t['note'])}</p>" if t.get("note") else ""
    rows.append(["all steps", "", "", round(sum(s["seconds"] for s in t["steps"]), 1)])
    return _table(["component", "status", "cached or run", "seconds"], rows,
                  numeric_from=3) + note


def render_html(numbers: dict[str, Any], figures: dict[str, bytes],
                thumbs: dict[int, bytes]) -> str:
    """The whole page.

    Args:
      numbers: the report's numbers (report.json).
      figures: PNGs: "learning_curves", "confusion_matrix", "reliability".
      thumbs: JPEG thumbnails of the test images the galleries show, by example index.

    Returns:
      The HTML text, self-contained.
    """
    nav = "".join(f"<a href='#{s.lower()}'>{s}</a>" for s in SECTIONS)
    bodies = {"Data": _data_html(numbers), "Training": _training_html(numbers, figures),
              "Evaluation": _evaluation_html(numbers, figures, thumbs),
              "Serving": _serving_html(numbers), "Timing": _timing_html(numbers)}
    sections = "".join(f"<h2 id='{name.lower()}'>{name}</h2>{bodies[name]}" for name in SECTIONS)
    title = f"Run report: {', '.join(numbers['classes'])}"
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>Run report</h1><p class='note'>{len(numbers['classes'])} classes: "
            f"{_e(', '.join(numbers['classes']))}</p>{_verdict_html(numbers)}<nav>{nav}</nav>"
            f"{sections}</body></html>")


def render_markdown(numbers: dict[str, Any]) -> str:
    """The verdict and the key numbers in Markdown, for Kubeflow's UI.

    Args:
      numbers: the report's numbers (report.json).

    Returns:
      The Markdown text.
    """
    _, headline, details = verdict(numbers)
    ev = numbers["evaluation"]
    intervals = ev.get("intervals") or {}
    lines = [f"## {headline}", "", *(f"- {d}" for d in details), "",
             "| metric | value | 95% interval |", "|---|---|---|"]
    lines += [f"| {metric_label(k, ev.get('top_k'))} | {fmt(v)} | "
              f"{interval_text(intervals.get(k))} |" for k, v in ev["overall"].items()]
    lines += ["", "| class | precision | recall | AUC |", "|---|---|---|---|"]
    lines += [f"| {r['class'].replace('|', '/')} | {fmt(r['precision'])} | {fmt(r['recall'])} "
              f"| {fmt(r['auc'])} |" for r in ev["per_class"]]
    if numbers.get("on_device"):
        lines += ["", "| form | size | test accuracy | below the SavedModel by | pushed |",
                  "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |"
                  for row in on_device_rows(numbers["on_device"])]
    if numbers.get("predictions"):
        lines += ["", predictions_line(numbers["predictions"]) + ": "
                  + ", ".join(f"`{p}`" for p in numbers["predictions"]["files"].values())]
    s = numbers["serving"]
    if s["pushed"]:
        lines += ["", f"Pushed version {s['version']} to `{s['path']}`.", "", "```",
                  s["curl"], s["client"], "```"]
    return "\n".join(lines) + "\n"
