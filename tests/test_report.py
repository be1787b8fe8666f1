"""The report package and the summary record: selection on the sweep's objective, statistics
computed once, what a person reads (terminal width, ms/sample, noisy costs, labels, the RF
square), the end-of-sweep top 5. Synthetic summaries in the shape convexp writes them; the
sweep of tests/test_compare.py supplies the costs and ERFs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_compare import _build_sweep, _summary

from convexp import record
from convexp.report import aggregate, load_summaries, render_text, write_report
from convexp.report import stats as report_stats
from convexp.report.render import TERMINAL_WIDTH, terminal_table
from convexp.report.runs import point_label


def _jobs(rows, objective=None):
    """rows: (model, kernel, dilation, [(best_val_acc, test_acc), ...]) -> summaries."""
    jobs = []
    for model, k, d, seeds in rows:
        for seed, (val, test) in enumerate(seeds):
            job = _summary(model, k, d, seed, test)
            job.update(best_val_acc=val, final_val_acc=val - 0.002, job_dir=str(len(jobs)))
            if objective:
                job.update(objective=objective, objective_value=job[objective])
            jobs.append(job)
    return jobs


# Validation and test disagree: standard wins on validation, depthwise_dilated on test.
DISAGREE = [
    ("standard", 3, 1, [(0.990, 0.980), (0.991, 0.981), (0.992, 0.979)]),
    ("depthwise_dilated", 3, 2, [(0.980, 0.990), (0.981, 0.991), (0.979, 0.992)]),
]


@pytest.mark.parametrize("objective", [None, "best_val_acc"])
def test_ranks_names_the_best_and_tests_on_validation_not_test(objective):
    configs = aggregate(_jobs(DISAGREE, objective))  # None: a dir from before the field
    assert [c["label"] for c in configs] == ["standard k3 d1", "depthwise_dilated k3 d2"]
    assert configs[0]["objective"] == "best_val_acc"
    assert configs[0]["objective_values"] == pytest.approx([0.990, 0.991, 0.992])
    stats = pytest.importorskip("scipy.stats")
    ref = stats.ttest_ind([0.990, 0.991, 0.992], [0.980, 0.981, 0.979], equal_var=False)
    assert configs[1]["welch_p_vs_best"] == pytest.approx(ref.pvalue, rel=1e-9)
    text = render_text(Path("x"), [], configs)
    assert "Ranked by mean best val acc over seeds, the sweep's objective" in text
    assert "never on the test set" in text
    assert "Best: standard k3 d1, best val acc 99.10 ± 0.10 % (test acc 98.00 ± 0.10 %" in text


def test_the_recorded_objective_is_the_one_ranked():
    configs = aggregate(_jobs(DISAGREE, "final_val_acc"))
    assert configs[0]["objective"] == "final_val_acc"
    assert configs[0]["objective_mean"] == pytest.approx(np.mean([0.988, 0.989, 0.990]))
    header = terminal_table(configs)[0]
    assert "final val acc (%)" in header and "best val acc (%)" in header
    assert "test acc (%)" in header


def test_statistics_are_computed_once_per_report(tmp_path, monkeypatch):
    root = _build_sweep(tmp_path / "multirun")
    n_configs = len(aggregate(load_summaries(root)))
    calls = []
    real = report_stats.welch_t_test
    monkeypatch.setattr(report_stats, "welch_t_test", lambda a, b: calls.append(1) or real(a, b))
    _, text = write_report(root, plots=False)
    assert len(calls) == n_configs - 1  # each configuration against the best, once
    assert "Welch t =" in text and (root / "report" / "comparison.md").is_file()


def test_terminal_table_fits_120_columns_and_the_full_table_stays_in_markdown(tmp_path):
    long = "optimizer.lr=0.0031622776601683794 data.batch_size=512 model.channels=[32,64,128]"
    jobs = _jobs(DISAGREE)
    for job in jobs:
        job["overrides"] += long.split()
    jobs.append(dict(jobs[0], status="failed", reason="x" * 300, job_dir="99",
                     overrides=["model=standard", "seed=9", "optimizer.lr=0.1"]))
    configs = aggregate(jobs)
    lines = terminal_table(configs)
    assert max(len(line) for line in lines) <= TERMINAL_WIDTH
    assert any("…" in line for line in lines)
    root = tmp_path / "runs"
    for job in jobs:
        (root / job["job_dir"]).mkdir(parents=True)
        (root / job["job_dir"] / "summary.json").write_text(json.dumps(job))
    _, text = write_report(root, plots=False)
    table = text.split("\n\n")[1].splitlines()
    assert max(len(line) for line in table) <= TERMINAL_WIDTH
    markdown = (root / "report" / "comparison.md").read_text()
    assert "optimizer.lr=0.00316" in markdown and "x" * 300 in markdown


def test_training_cost_in_ms_per_sample_and_noisy_costs_said(tmp_path):
    root = _build_sweep(tmp_path / "multirun")
    _, text = write_report(root, plots=False)
    assert "ms/sample" in text and "µs" not in text and "e+0" not in text
    assert "noisy" not in text  # seeds within 1% of each other
    job = root / "0" / "summary.json"  # standard k3 d1, seed 0: twice as slow
    summary = json.loads(job.read_text())
    job.write_text(json.dumps({**summary, "train_samples_per_s": 0.5 * summary[
        "train_samples_per_s"]}))
    _, text = write_report(root, plots=False)
    (note,) = [line for line in text.splitlines() if "figures are noisy" in line]
    assert "1 configuration varies by more than 20%" in note
    assert "(most: standard k3 d1, 6" in note  # 2/3 of its mean
    configs = aggregate(load_summaries(root))
    ms = [1e3 / json.loads((root / d / "summary.json").read_text())["train_samples_per_s"]
          for d in configs[[c["label"] for c in configs].index("standard k3 d1")]["job_dirs"]]
    assert f"{(max(ms) - min(ms)) / np.mean(ms):.0%}" in note


def test_point_labels_carry_the_operator():
    configs = {c["label"]: c for c in aggregate(_jobs(DISAGREE))}
    assert point_label(configs["standard k3 d1"]) == "std k3 d1"
    assert point_label(configs["depthwise_dilated k3 d2"]) == "dw-sep k3 d2"


@pytest.mark.parametrize("rf", [28, 34])
def test_rf_square_stays_visible_when_it_reaches_the_image_border(rf):
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from convexp.erf_maps import draw_erf

    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw_erf(ax, np.ones((28, 28)), rf)
    (square,) = ax.patches
    x0, x1 = sorted(ax.get_xlim())
    y0, y1 = sorted(ax.get_ylim())
    assert x0 < square.get_x() and square.get_x() + square.get_width() < x1
    assert y0 < square.get_y() and square.get_y() + square.get_height() < y1


def test_sweep_end_prints_the_top_5_ranked_as_the_report(tmp_path, capsys):
    from convexp.callbacks import ConvexpCallback

    root = _build_sweep(tmp_path / "multirun")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(root)},
                                         "runtime": {"choices": {}}},
                               "logger": {"name": "none", "mode": "disabled"}})
    ConvexpCallback().on_multirun_end(config)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sweep done: 16 jobs, 16 completed")
    assert out[1] == ("top 5 of 8 configurations by mean best val acc (test acc for "
                      "information; the full table: the report below):")
    rows = out[4:9]
    expected = [c for c in aggregate(load_summaries(root))][:5]
    assert [r.split()[:3] for r in rows] == [
        [c["variant"], str(c["kernel_size"]), str(c["dilation"])] for c in expected]
    assert all(len(line) <= TERMINAL_WIDTH for line in out[1:9])
    assert out[9].startswith("comparison report: ")


def test_record_loader_and_counts(tmp_path):
    for name, text in {"0": json.dumps({"status": "completed", "seed": 0}),
                       "1": "{not json", "2": json.dumps({"seed": 2}),
                       "10": json.dumps({"status": "running"}),
                       "0/wandb": json.dumps({"status": "completed"})}.items():
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / name / record.SUMMARY).write_text(text)
    summaries = record.load_summaries(tmp_path)
    assert [s["job_dir"] for s in summaries] == ["0", "1", "2", "10"]
    assert summaries[1]["status"] == "failed" and "unreadable" in summaries[1]["reason"]
    assert summaries[2]["status"] == "failed" and "no status" in summaries[2]["reason"]
    counts = record.count_statuses(summaries)
    assert (counts["completed"], counts["failed"], counts["running"], counts["diverged"]) == (
        1, 2, 1, 0)
    assert record.objective_value({"best_val_acc": 0.9}, "best_val_acc") == 0.9
    new = {"objective": "test_acc", "objective_value": 0.8, "test_acc": 0.8}
    assert record.objective_name([new, new, {}]) == "test_acc"


def test_report_and_record_import_neither_torch_nor_wandb(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import convexp.record, convexp.report, convexp.report.wandb_upload, convexp.job\n"
        "import convexp.report.plots\n"
        "loaded = [m for m, v in sys.modules.items() if v is not None]\n"
        "assert not {'torch', 'wandb', 'matplotlib'} & set(loaded), loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_a_run_records_its_objective_and_returns_it(tmp_path):
    from conftest import FAST_RUN, read_summary, run_job_for_objective

    sizes = ["data.train_size=256", "data.val_size=128", "data.test_size=128"]
    returned = run_job_for_objective([*FAST_RUN, *sizes, "logger=none",
                                      "objective=final_val_acc"], tmp_path / "run")
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "completed"
    assert summary["objective"] == "final_val_acc"
    assert summary["objective_value"] == summary["final_val_acc"] == returned
