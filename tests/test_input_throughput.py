"""benchmarks/input_throughput.py on the mini set: every source is timed and profiled, and the
ratios are printed; the TF profiler's trace shows decoding only where the input streams; a
split beyond the cache budget is refused in one line."""

from __future__ import annotations

import re

import pytest

from benchmarks import input_throughput
from tests.conftest import SMALL_ALPHA, SMALL_IMAGE_SIZE, SMALL_WEIGHTS

pytestmark = pytest.mark.slow  # trains a few steps of the small base


def args(mini_tfrecords) -> list[str]:
    return ["--tfrecords", f"{mini_tfrecords.output_dir}/train", "--base-weights",
            str(SMALL_WEIGHTS), "--alpha", str(SMALL_ALPHA), "--image-size",
            str(SMALL_IMAGE_SIZE), "--steps", "2", "--rounds", "3"]


def test_each_source_is_timed_with_its_input_wait_and_cpu(mini_tfrecords, capsys):
    assert input_throughput.main(args(mini_tfrecords)) == 0
    out = capsys.readouterr().out
    for name in ("trainer", "streamed", "memory"):
        rounds = re.findall(rf"round \d {name}: ([\d.]+) steps/s, input wait ([\d.]+) ms/step, "
                            rf"CPU ([\d.]+) s/step", out)
        assert len(rounds) == 3 and all(float(rate) > 0 for rate, _, _ in rounds)
    ratios = re.findall(r"ratio (trainer|streamed) / memory: ([\d.]+)", out)
    assert [name for name, _ in ratios] == ["trainer", "streamed"]
    assert all(float(value) > 0 for _, value in ratios)


def test_the_trace_finds_decoding_only_in_the_streamed_input(mini_tfrecords, tmp_path, capsys):
    # More traced steps than the prefetch buffer holds, so the streamed input must decode.
    assert input_throughput.main([*args(mini_tfrecords), "--steps", "6", "--rounds", "1",
                                  "--trace", str(tmp_path)]) == 0
    traced = dict(re.findall(r"(\w+) +IteratorGetNext [\d.]+ ms/step, input kernels ([\d.]+) "
                             r"ms/step", capsys.readouterr().out))
    assert set(traced) == {"trainer", "streamed", "memory"}
    # Phase 2's input is the cache phase 1 filled: no parse, decode or resize while training.
    assert float(traced["streamed"]) > 0
    assert float(traced["trainer"]) == 0 and float(traced["memory"]) == 0
    assert (tmp_path / "streamed" / "plugins" / "profile").is_dir()


def test_a_split_beyond_the_cache_budget_is_refused(mini_tfrecords, monkeypatch, capsys):
    import trainer.data

    monkeypatch.setattr(trainer.data, "CACHE_BUDGET_BYTES", 1)
    with pytest.raises(SystemExit) as exited:
        input_throughput.main(args(mini_tfrecords))
    assert exited.value.code == 2
    assert "exceeds the decoded-image cache budget" in capsys.readouterr().err
