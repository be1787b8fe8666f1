"""Smoke test of the benchmark harness: it runs and writes well-formed results.

Speed is measured by `python -m convexp.bench` (benchmarks/README.md), never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from convexp.bench import grid_order, override_sets


@pytest.mark.slow
def test_quick_bench_writes_positive_numbers(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "convexp.bench", "--quick", "--models", "book_cnn",
           "--loops", "textbook,convexp", "--repeats", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "book_cnn" in proc.stdout and str(out) in proc.stdout

    report = json.loads(out.read_text())
    machine = report["machine"]
    for key in ("date", "torch", "device", "device_name", "cores", "torch_threads"):
        assert machine[key], key
    assert report["models"]["book_cnn"] == {"params": 24_496, "macs": 2_964_528}

    runs = report["runs"]
    assert sorted(r["loop"] for r in runs) == ["convexp", "textbook"]
    for run in runs:
        assert "error" not in run, run
        assert run["model"] == "book_cnn" and run["repeat"] == 0
        assert run["steps"] == 5 and run["samples"] == 5 * 128
        for key in ("samples_per_s", "seconds", "warmup_s", "peak_memory_mb"):
            assert run[key] > 0, key

    rows = {row["loop"]: row for row in report["summary"]}
    assert set(rows) == {"textbook", "convexp"}
    for row in rows.values():
        assert row["n"] == 1 and row["failed"] == 0
        assert 0 < row["samples_per_s_min"] <= row["samples_per_s_median"]
        assert row["samples_per_s_median"] <= row["samples_per_s_max"]
    assert rows["textbook"]["vs_textbook"] == 1.0
    assert report["ratios"]["book_cnn"]["convexp/textbook"] > 0


def test_grid_order_alternates_between_repeats():
    models, loops = ["a", "b"], ["textbook", "convexp", "convexp-fast"]
    first, second = grid_order(models, loops, 0), grid_order(models, loops, 1)
    assert sorted(first) == sorted(second) and len(first) == 6
    assert first[0] == ("a", "textbook") and second[0] == ("b", "convexp")


def test_override_sets():
    text = "trainer.compile=true model.channels=[16,32]; trainer.compile=false"
    assert override_sets(text) == [["trainer.compile=true", "model.channels=[16,32]"],
                                   ["trainer.compile=false"]]


@pytest.mark.slow
def test_compile_cache_runs_a_cold_and_a_warm_compiled_process(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "convexp.bench", "--quick", "--models", "book_cnn",
           "--compile-cache", "--no-throughput", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "compile time" in proc.stdout

    (entry,) = json.loads(out.read_text())["compile_cache"]
    assert entry["model"] == "book_cnn"
    for phase in ("cold", "warm"):
        run = entry[phase]
        assert "error" not in run, run
        assert run["compiled"] is True and run["warmup_s"] > 0
        assert entry[f"{phase}_warmup_s"] == run["warmup_s"]
