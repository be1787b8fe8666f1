"""Tests for convexp.compare on a synthetic multirun directory."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from convexp.compare import aggregate, load_summaries, main, noise_notes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (model, kernel_size, dilation, [test_acc per seed]); accuracies are fractions.
CONFIGS = [
    ("depthwise_dilated", 5, 2, [0.9912, 0.9908, 0.9914]),
    ("standard", 3, 1, [0.9910, 0.9915, 0.9905]),  # within spread of the best
    ("depthwise_separable", 3, 1, [0.9700, 0.9720]),  # ~2 pp behind: clearly separated
    ("book_cnn", None, None, [0.9800]),  # single seed, no kernel/dilation data
]
DIVERGED_REASON = "loss became NaN at epoch 2"
FAILED_REASON = "CUDA out of memory"


def _summary(model, kernel, dilation, seed, test_acc, status="completed", reason=None):
    overrides = [f"model={model}", f"seed={seed}"]
    overrides += [f"model.kernel_size={kernel}"] if kernel is not None else []
    overrides += [f"model.dilation={dilation}"] if dilation is not None else []
    done = status == "completed"
    params = {"standard": 20000, "depthwise_dilated": 5000}.get(model, 8000)
    return {
        "status": status,
        "reason": reason,
        "model": model,
        "kernel_size": kernel,
        "dilation": dilation,
        "channels": [16, 32],
        "padding": "same",
        "seed": seed,
        "params": params,
        "macs": params * 50,
        "receptive_field": 9,
        "best_val_acc": test_acc + 0.001 if done else None,
        "final_val_acc": test_acc if done else None,
        "test_acc": test_acc if done else None,
        "train_samples_per_s": 1000.0 + seed if done else None,
        "epochs_completed": 3 if done else 1,
        "wall_s": 12.5,
        "device": "cpu",
        "compiled": False,
        "overrides": overrides,
        "param_ratio_vs_standard": params / 20000,
        "macs_ratio_vs_standard": params / 20000,
    }


@pytest.fixture
def multirun(tmp_path):
    jobs = [
        _summary(model, k, d, seed, acc)
        for model, k, d, accs in CONFIGS
        for seed, acc in enumerate(accs)
    ]
    jobs.append(_summary("dilated", 3, 2, 0, 0.985))
    jobs.append(_summary("dilated", 3, 2, 1, 0.1, status="diverged", reason=DIVERGED_REASON))
    jobs.append(_summary("dilated", 7, 4, 0, None, status="failed", reason=FAILED_REASON))
    for n, job in enumerate(jobs):
        job_dir = tmp_path / "multirun" / str(n) / ("nested" if n == 0 else "")
        job_dir.mkdir(parents=True)
        (job_dir / "summary.json").write_text(json.dumps(job))
    for skipped in ("0/.hydra", "1/wandb/run-1"):  # copies there must be ignored
        (tmp_path / "multirun" / skipped).mkdir(parents=True)
        (tmp_path / "multirun" / skipped / "summary.json").write_text(json.dumps(jobs[0]))
    return tmp_path / "multirun"


def _by_label(configs):
    return {c["label"]: c for c in configs}


def test_load_summaries_finds_nested_jobs_and_skips_hydra_and_wandb(multirun):
    summaries = load_summaries(multirun)
    assert len(summaries) == 12
    assert summaries[0]["job_dir"] == "0/nested"
    assert [s["job_dir"] for s in summaries[1:3]] == ["1", "2"]  # natural order, not 1, 10, 11


def test_aggregate_matches_numpy(multirun):
    configs = _by_label(aggregate(load_summaries(multirun)))
    for model, k, d, accs in CONFIGS:
        label = " ".join([model] + ([f"k{k}", f"d{d}"] if k is not None else []))
        config = configs[label]
        assert config["test_acc_mean"] == pytest.approx(np.mean(accs))
        assert config["test_acc_n"] == len(accs)
        if len(accs) > 1:
            assert config["test_acc_std"] == pytest.approx(np.std(accs, ddof=1))
        else:
            assert config["test_acc_std"] is None
        assert config["train_samples_per_s_mean"] == pytest.approx(1000 + np.mean(range(len(accs))))
    # The diverged seed does not count: only the completed one.
    partial = configs["dilated k3 d2"]
    assert (partial["test_acc_mean"], partial["test_acc_n"], partial["n_jobs"]) == (0.985, 1, 2)
    assert partial["status"] == "1 completed, 1 diverged"
    assert partial["reasons"] == [DIVERGED_REASON]


def test_aggregate_ranks_by_test_accuracy_with_failures_last(multirun):
    labels = [c["label"] for c in aggregate(load_summaries(multirun))]
    assert labels == [
        "depthwise_dilated k5 d2",
        "standard k3 d1",
        "dilated k3 d2",
        "book_cnn",
        "depthwise_separable k3 d1",
        "dilated k7 d4",
    ]


def test_jobs_without_overrides_group_by_model_fields():
    jobs = [_summary("standard", 3, 1, seed, 0.99) for seed in range(2)]
    jobs.append(_summary("standard", 5, 1, 0, 0.98))
    for n, job in enumerate(jobs):
        job.update(overrides=None, job_dir=str(n))
    configs = aggregate(jobs)
    assert [(c["label"], c["n_jobs"]) for c in configs] == [
        ("standard k3 d1", 2),
        ("standard k5 d1", 1),
    ]


def test_noise_note_for_tied_pair_only(multirun):
    notes = "\n".join(noise_notes(aggregate(load_summaries(multirun))))
    assert (
        "depthwise_dilated k5 d2 and standard k3 d1 differ by 0.01 pp, within their seed spread"
        in notes
    )
    assert "Indistinguishable from the best: standard k3 d1" in notes
    assert "book_cnn has a single seed (n=1), so no seed spread is known" in notes
    separated = [line for line in notes.splitlines() if "depthwise_separable" in line]
    assert separated and not any("within" in line for line in separated)
    assert "Clearly behind the best (beyond the seed spread): depthwise_separable k3 d1" in notes


def test_cli_writes_report(multirun, capsys):
    assert main([str(multirun)]) == 0
    stdout = capsys.readouterr().out
    report = multirun / "report"
    markdown = (report / "comparison.md").read_text()
    for text in (stdout, markdown):
        assert FAILED_REASON in text and DIVERGED_REASON in text
        assert "within their seed spread" in text
        assert "99.11 ± 0.03" in text and "98.50 (n=1)" in text
        assert "params vs std" in text
    assert "Failures (2):" in stdout and "## Failures (2)" in markdown
    table_lines = [line for line in stdout.splitlines() if line.startswith("dilated")]
    assert "failed" in table_lines[-1] and FAILED_REASON in table_lines[-1]  # last row

    with (report / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    configs = aggregate(load_summaries(multirun))
    assert [r["label"] for r in rows] == [c["label"] for c in configs]
    for row, config in zip(rows, configs, strict=True):
        for key in ("test_acc_mean", "test_acc_std", "params", "param_ratio_vs_standard"):
            expected = config[key]
            assert (row[key] == "") if expected is None else float(row[key]) == expected
        assert int(row["test_acc_n"]) == config["test_acc_n"]
        assert row["status"] == config["status"]

    pngs = [
        "acc_vs_params",
        "acc_vs_macs",
        "heatmap_depthwise_dilated",
        "heatmap_standard",
        "heatmap_dilated",
        "heatmap_depthwise_separable",
    ]
    for name in pngs:
        assert (report / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
    assert not (report / "heatmap_book_cnn.png").exists()


def test_cli_out_dir_and_no_plots(multirun, tmp_path):
    out = tmp_path / "elsewhere"
    assert main([str(multirun), "--out", str(out), "--no-plots"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.md"]
    assert not (multirun / "report").exists()


@pytest.mark.parametrize("make_dir", [True, False])
def test_cli_exit_code_2_without_summaries(tmp_path, capsys, make_dir):
    target = tmp_path / "empty"
    if make_dir:
        (target / "0" / ".hydra").mkdir(parents=True)
    assert main([str(target)]) == 2
    assert "convexp-compare:" in capsys.readouterr().err
