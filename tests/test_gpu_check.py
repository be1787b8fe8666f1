"""benchmarks/gpu_check.sh, the GPU check, run as a dry run: every stage on the CPU, tiny sizes.

The real check runs on a lent GPU machine (benchmarks/README.md, "GPU check"); here we check that
the script runs each stage, records figures and failures in its report, packs its archive and
says in its exit code whether every stage passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
HELPER = REPO / "benchmarks" / "gpu_report.py"
MODELS = ("book_cnn", "standard", "dilated", "depthwise_separable", "depthwise_dilated")


def run_check(tmp_path: Path, *args: str, env: dict | None = None,
              timeout: float = 900) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update({"OUT": str(tmp_path / "out"), "GPU_CHECK_WORK": str(tmp_path / "work"),
                     "PYTHON": sys.executable, "TMPDIR": str(tmp_path)})
    full_env.pop("WANDB_API_KEY", None)
    full_env.update(env or {})
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def md_tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in text, as rows keyed by the header's cells."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            header, rows = block[0], block[2:]
            tables.append([dict(zip(header, row, strict=True)) for row in rows])
            block = []
    return tables


def find_table(text: str, first_column: str) -> list[dict[str, str]]:
    matches = [t for t in md_tables(text) if t and next(iter(t[0])) == first_column]
    assert matches, f"no table starting with column {first_column!r} in:\n{text}"
    return matches[0]


def seconds(cell: str) -> float:
    return float(cell.replace(",", ""))


# The dry run's own budgets (600 s in all) are for a person at a terminal; a busy CI machine
# can take longer. Tests that check what the stages do give every stage a budget no load
# reaches; the budget logic itself is tested with budgets the test controls (below).
NO_STEP_CAP = {"GPU_CHECK_STEP_CAP": "7200"}  # and every step a timeout no load reaches
NO_BUDGET = ["--total", "36000", *(f"--budget={s}=7200" for s in
                                   ("models", "compile", "sweep", "tta", "bench"))]


@pytest.mark.slow
def test_dry_run_trains_every_model_and_reports_every_stage(tmp_path):
    proc = run_check(tmp_path, "--dry-run", *NO_BUDGET, timeout=7200, env=NO_STEP_CAP)
    out = tmp_path / "out"
    report_path = out / "gpu_check.md"
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-8000:]}\nSTDERR:\n{proc.stderr[-3000:]}")
    assert report_path.is_file() and (out / "gpu_check.tar.gz").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.md", "gpu_check.tar.gz"]
    report = report_path.read_text()
    assert "every stage passed" in report and "Dry run on the CPU" in report

    stages = {row["stage"].split(":")[0].split(" ")[0]: row for row in find_table(report, "stage")}
    assert set(stages) == {"setup", "models", "compile", "sweep", "tta", "bench"}
    assert all(row["result"] == "passed" for row in stages.values()), stages

    assert "| torch | " in report and "| date (UTC) | " in report

    models = {row["model file"].strip("`"): row for row in find_table(report, "model file")}
    assert set(MODELS) <= set(models), models
    for name in MODELS:
        row = models[name]
        assert row["status"] == "ok", row
        assert 0 < float(row["test acc"]) <= 1, row
        assert seconds(row["job wall (s)"]) > 0 and seconds(row["train time (s)"]) > 0, row
        assert float(row["train samples/s"].replace(",", "")) > 0, row
        assert row["compiled"] == "no", row  # trainer.compile=auto stays eager on the CPU

    sweep = {row["sweep"]: row["value"] for row in find_table(report, "sweep")}
    assert sweep["jobs"] == "3 (expected 3)" and sweep["completed"] == "3", sweep
    assert seconds(sweep["wall time (s)"]) > 0, sweep
    jobs = find_table(report, "job")
    assert [(r["kernel"], r["dilation"]) for r in jobs] == [("3", "1"), ("3", "2"), ("3", "3")]

    modes = {row["mode"]: row for row in find_table(report, "mode")}
    assert set(modes) == {"eager", "compiled"}
    assert modes["eager"]["compiled"] == "no" and modes["compiled"]["compiled"] == "yes", modes
    for row in modes.values():
        assert row["status"] == "ok" and seconds(row["job wall (s)"]) > 0, row
    assert "compiled / eager" in report

    tta = find_table(report, "recipe")
    assert len(tta) == 2 and all(r["reached"] in ("yes", "no") for r in tta), tta
    bench = find_table(report, "model")
    assert {r["loop"] for r in bench} == {"textbook", "convexp"}, bench

    with tarfile.open(out / "gpu_check.tar.gz") as tar:
        names = tar.getnames()
        summaries = [n for n in names if n.endswith("/summary.json")]
        assert len(summaries) == 5 + 2 + 3, summaries
        for name in ("gpu_check/results.json", "gpu_check/gpu_check.md",
                     "gpu_check/bench/tta.json", "gpu_check/bench/throughput.json"):
            assert name in names, name
        assert not [n for n in names if n.endswith(".pt") or "/cache/" in n]
        results = json.load(tar.extractfile("gpu_check/results.json"))
    assert results["passed"] is True
    accs = {m["model"]: m["test_acc"] for m in results["stages"]["models"]["figures"]}
    assert all(0 < accs[m] <= 1 for m in MODELS), accs
    assert results["stages"]["sweep"]["figures"]["jobs"] == 3


@pytest.mark.slow
def test_a_failing_stage_is_recorded_and_the_next_stage_still_runs(tmp_path):
    proc = run_check(tmp_path, "--dry-run", "--stages", "compile,sweep", *NO_BUDGET,
                     env={"GPU_CHECK_COMPILE_MODEL": "no_such_model", **NO_STEP_CAP},
                     timeout=7200)
    assert proc.returncode == 1, proc.stdout[-6000:]
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    stages = {row["stage"].split(":")[0]: row["result"] for row in find_table(report, "stage")}
    assert stages == {"setup (wheels, environment probe, nvidia-smi)": "passed",
                      "compile": "FAILED", "sweep": "passed"}, stages
    assert "stage(s) not passed: compile (FAILED)" in report
    assert "### compile / eager: FAILED (exit" in report and "no_such_model" in report
    with tarfile.open(tmp_path / "out" / "gpu_check.tar.gz") as tar:
        assert sum(n.endswith("/summary.json") for n in tar.getnames()) == 3


def test_a_stage_past_its_budget_is_timed_out_and_the_next_is_skipped(tmp_path):
    """The budget logic, with budgets the test sets: a 3-job training sweep cannot end within
    a 6 s budget on any machine (Python, torch and three trainings), so `timeout` stops it; a
    stage whose budget is under the smallest step (5 s in a dry run) is skipped, not started."""
    proc = run_check(tmp_path, "--dry-run", "--stages", "sweep,tta", "--budget", "sweep=6",
                     "--budget", "tta=1", timeout=7200)
    assert proc.returncode == 1, proc.stdout[-6000:]
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    stages = {row["stage"].split(":")[0]: row["result"] for row in find_table(report, "stage")}
    assert stages["sweep"] == "TIMED OUT", stages
    assert stages["tta"] == "SKIPPED (no time left)", stages
    assert "stage(s) not passed" in report


def test_report_marks_timeouts_and_skips(tmp_path):
    work = tmp_path / "work"
    (work / "logs").mkdir(parents=True)
    (work / "meta.txt").write_text("mode=gpu\ndevice=cuda\nstages=models,sweep\nsweep_jobs=9\n"
                                   "sweep_overrides=model.kernel_size=3,5,7 model.dilation=1,2,3\n")
    (work / "env.json").write_text(json.dumps({"torch": "2.11.0", "cuda_available": True,
                                               "cuda_device": "NVIDIA H100 80GB HBM3",
                                               "hydra": "1.3.8", "omegaconf": "2.3.1"}))
    (work / "nvidia-smi.csv").write_text("NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB, 9.0\n")
    (work / "logs" / "sweep-sweep.log").write_text("compiling...\nstill compiling\n")
    run = work / "sweep" / "0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({
        "status": "completed", "test_acc": 0.99, "kernel_size": 3, "dilation": 1,
        "compiled": True, "wall_s": 12.0, "train_time_s": 3.0}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "epoch_time_s": 9.5}) + "\n")
    steps = [
        ["setup", "probe", "ok", "0", "5.0", "90", "", "", "python3 gpu_report.py probe"],
        ["models", "book_cnn", "skipped", "", "0", "0", "models/book_cnn", "",
         "python3 -m convexp"],
        ["sweep", "sweep", "timeout", "124", "150.1", "150", "sweep", "logs/sweep-sweep.log",
         "python3 -m convexp -m"],
    ]
    (work / "steps.tsv").write_text("".join("\t".join(s) + "\n" for s in steps))
    (work / "stages.tsv").write_text("setup\t\t5.0\nmodels\t175\t0.0\nsweep\t150\t150.2\n")

    report_path = tmp_path / "report.md"
    proc = subprocess.run([sys.executable, str(HELPER), "report", str(work), str(report_path),
                           "--final"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 10, proc.stderr
    report = report_path.read_text()
    assert report.startswith("# convexp GPU check: NVIDIA H100 80GB HBM3")
    stages = {row["stage"].split(":")[0]: row["result"] for row in find_table(report, "stage")}
    assert stages["models"] == "SKIPPED (no time left)" and stages["sweep"] == "TIMED OUT"
    sweep = {row["sweep"]: row["value"] for row in find_table(report, "sweep")}
    assert sweep["jobs"] == "1 (expected 9)" and sweep["wall time (s)"] == "150.1"
    assert "### sweep / sweep: TIMED OUT (150 s)" in report and "still compiling" in report

    archive = tmp_path / "a.tar.gz"
    proc = subprocess.run([sys.executable, str(HELPER), "archive", str(work), str(archive)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(archive) as tar:
        assert "gpu_check/sweep/0/summary.json" in tar.getnames()


def test_bad_arguments_exit_2(tmp_path):
    for args in (["--bogus"], ["--stages", "models,nope"], ["--budget", "models=soon"]):
        proc = run_check(tmp_path, *args, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert not (tmp_path / "out").exists()
