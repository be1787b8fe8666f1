"""Tests for convexp.compare on a synthetic multirun directory."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convexp.compare
from convexp.compare import COST_AXES, aggregate, load_summaries, main, noise_notes, render_text
from convexp.record import load_sweeps

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


def test_welch_test_against_the_best_on_numbers_checked_by_hand(multirun):
    # best [0.9912, 0.9908, 0.9914] vs standard [0.9910, 0.9915, 0.9905]: diff 0.000133,
    # var 9.33e-8 and 2.5e-7, se = sqrt(9.33e-8/3 + 2.5e-7/3) = 3.383e-4, t = 0.394,
    # Welch df = 3.31, p = 0.72 (scipy.stats.ttest_ind(equal_var=False) agrees).
    notes = "\n".join(noise_notes(aggregate(load_summaries(multirun))))
    assert "Welch's two-sample t-test (unequal variances, two-sided)" in notes
    assert "significant when p < 0.05" in notes
    assert (
        "depthwise_dilated k5 d2 vs standard k3 d1: +0.01 pp, Welch t = 0.39, df = 3.3, "
        "p = 0.72 (n = 3 vs 3): not significant at p < 0.05" in notes
    )
    assert "Not significantly different from the best (p >= 0.05): standard k3 d1." in notes
    # vs [0.970, 0.972]: t = 19.83, df = 1.06, p = 0.027.
    assert (
        "depthwise_dilated k5 d2 vs depthwise_separable k3 d1: +2.01 pp, Welch t = 19.83, "
        "df = 1.1, p = 0.027 (n = 3 vs 2): significant at p < 0.05" in notes
    )
    assert "Significantly behind the best (p < 0.05): depthwise_separable k3 d1." in notes
    assert "depthwise_dilated k5 d2 vs book_cnn: +1.11 pp; cannot be tested (n = 3 vs 1)" in notes
    assert "Cannot be tested (a single seed): dilated k3 d2, book_cnn." in notes
    configs = _by_label(aggregate(load_summaries(multirun)))
    assert configs["standard k3 d1"]["welch_t_vs_best"] == pytest.approx(0.39413171, rel=1e-6)
    assert configs["standard k3 d1"]["welch_p_vs_best"] == pytest.approx(0.71751793, rel=1e-6)
    assert configs["book_cnn"]["welch_p_vs_best"] is None
    assert configs["depthwise_dilated k5 d2"]["welch_p_vs_best"] is None  # the best itself


def test_cli_writes_report(multirun, capsys):
    assert main([str(multirun)]) == 0
    stdout = capsys.readouterr().out
    report = multirun / "report"
    markdown = (report / "comparison.md").read_text()
    for text in (stdout, markdown):
        assert FAILED_REASON in text and DIVERGED_REASON in text
        assert "not significant at p < 0.05" in text
        assert "99.11 ± 0.03" in text and "98.50 (n=1)" in text
        assert "Ranked by mean best val acc over seeds, the sweep's objective" in text
    # the full table (ratios, reasons) in the Markdown; the terminal's fits in 120 columns
    assert "params vs standard conv" in markdown and "MACs vs standard conv" in markdown
    assert "params vs std" not in markdown
    assert "Failures (2):" in stdout and "## Failures (2)" in markdown
    table_lines = [line for line in stdout.splitlines() if line.startswith("dilated")]
    assert table_lines[-1].split()[-1] == "failed"  # last row
    md_rows = [line for line in markdown.splitlines() if line.startswith("| dilated | 7 |")]
    assert FAILED_REASON in md_rows[0]

    with (report / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    configs = aggregate(load_summaries(multirun))
    assert [r["label"] for r in rows] == [c["label"] for c in configs]
    for row, config in zip(rows, configs, strict=True):
        for key in (
            "test_acc_mean",
            "test_acc_std",
            "params",
            "param_ratio_vs_standard",
            "welch_p_vs_best",
        ):
            expected = config[key]
            assert (row[key] == "") if expected is None else float(row[key]) == expected
        assert int(row["test_acc_n"]) == config["test_acc_n"]
        assert row["status"] == config["status"]

    # No job recorded inference latency: its panel is skipped.
    for name in ("acc_vs_cost", "acc_vs_params", "acc_vs_macs", "acc_vs_train_time", "heatmap"):
        assert (report / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
    assert not (report / "acc_vs_inference.png").exists()
    assert not list(report.glob("heatmap_*.png"))  # one figure, one panel per operator
    assert not (report / "erf.png").exists()  # no job saved an ERF


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
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("convexp: error: ") and str(target) in line


def _split_in_two(multirun: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The fixture's jobs as two sweeps, e.g. a user's model's and convexp's: the first three
    job dirs under ours/, the rest under theirs/ (job dirs keep their numbers)."""
    ours, theirs = tmp_path / "sweeps" / "ours", tmp_path / "elsewhere" / "theirs"
    for job in sorted(p for p in multirun.iterdir() if p.name.isdigit()):
        shutil.copytree(job, (ours if int(job.name) < 3 else theirs) / job.name)
    return ours, theirs


def test_cli_pools_several_sweep_dirs_into_one_report(multirun, tmp_path, capsys):
    ours, theirs = _split_in_two(multirun, tmp_path)
    assert main([str(multirun), "--no-plots", "--out", str(tmp_path / "one")]) == 0
    one = capsys.readouterr().out
    out = tmp_path / "both"
    assert main([str(ours), str(theirs), "--no-plots", "--out", str(out)]) == 0
    both = capsys.readouterr().out
    # The same jobs give the same configurations, seeds pooled across the dirs; each job dir
    # named under the dirs' common folder.
    def rows(path):
        with path.open() as f:
            return list(csv.DictReader(f))

    pooled, alone = rows(out / "comparison.csv"), rows(tmp_path / "one/comparison.csv")
    assert [{**r, "job_dirs": None} for r in pooled] == [{**r, "job_dirs": None} for r in alone]
    best = json.loads(pooled[0]["job_dirs"])
    assert best == ["sweeps/ours/0/nested", "sweeps/ours/1", "sweeps/ours/2"], best
    table = [line for line in both.splitlines() if "±" in line]
    assert table == [line for line in one.splitlines() if "±" in line] and table
    assert f"jobs in 6 configurations from {ours}, {theirs}" in both
    assert f"from `{ours}`, `{theirs}`" in (out / "comparison.md").read_text()
    # Each failure names its job dir under the dirs' common folder.
    assert "theirs/" in both.split("Failures (2):")[1]
    _, summaries = load_sweeps([ours, theirs])
    assert len(summaries) == len(load_summaries(multirun))


def test_load_sweeps_loads_a_job_under_two_of_the_dirs_once(multirun):
    root, summaries = load_sweeps([multirun, multirun / "0", multirun])
    assert root == multirun.resolve()
    assert [s["job_dir"] for s in summaries] == [s["job_dir"] for s in load_summaries(multirun)]


def test_cli_several_dirs_need_out(multirun, tmp_path, capsys):
    ours, theirs = _split_in_two(multirun, tmp_path)
    assert main([str(ours), str(theirs)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == "convexp: error: 2 sweep dirs make one report: say where it goes with --out"
    assert not (ours / "report").exists() and not (theirs / "report").exists()
    assert main([str(ours), str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.startswith(f"convexp: error: {tmp_path / 'missing'} does not")


def test_cli_refuses_the_same_run_twice(multirun, tmp_path, capsys):
    """A sweep dir next to a copy of itself would double every seed and halve no spread."""
    copy = tmp_path / "copy"
    shutil.copytree(multirun, copy)
    assert main([str(multirun), str(copy), "--no-plots", "--out", str(tmp_path / "r")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"convexp: error: {copy.resolve() / '0' / 'nested'} repeats "
                           f"{multirun.resolve() / '0' / 'nested'} (same configuration and seed")
    assert line.endswith("(10 such pairs)")  # the completed jobs; failed ones are not results
    # A job that recorded no recipe is pooled with its configuration's one recipe: a repeat too.
    for path in copy.rglob("summary.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "recipe": "aaaaaaaaaaaa"}))
    assert main([str(multirun), str(copy), "--no-plots", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.endswith("(10 such pairs)\n")
    assert not (tmp_path / "r").exists()


def test_cli_several_wandb_groups_need_group(multirun, tmp_path, capsys):
    ours, theirs = _split_in_two(multirun, tmp_path)
    for n, folder in enumerate((ours, theirs)):
        for path in folder.rglob("summary.json"):
            path.write_text(json.dumps({**json.loads(path.read_text()), "wandb_group": f"g{n}"}))
    args = [str(ours), str(theirs), "--no-plots", "--out", str(tmp_path / "r"), "--wandb"]
    assert main([*args, "--wandb-mode", "disabled"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == ("convexp: error: the jobs logged into 2 W&B groups (g0, g1): name the "
                    "report's group with --group")


def test_recipe_names_what_is_trained_not_where_or_how_fast():
    from convexp.record import recipe_hash

    config = {"model": {"name": "standard", "kernel_size": 3}, "optimizer": {"lr": 0.01},
              "data": {"name": "mnist", "root": None, "verify": True, "eval_batch_size": 500},
              "trainer": {"max_epochs": 3, "device": "auto", "precision": "auto",
                          "threads": None, "progress": None},
              "logger": {"name": "wandb"}, "seed": 0, "resume": None}
    recipe = recipe_hash(config)
    assert len(recipe) == 12 and int(recipe, 16) >= 0
    same = json.loads(json.dumps(config))
    same.update(seed=7, logger={"name": "none"}, resume="outputs/x")
    same["data"].update(root="/data/mnist", verify=False, eval_batch_size=1000)
    same["trainer"].update(device="cuda", precision="bf16", threads=1, progress=False)
    assert recipe_hash(same) == recipe
    for path, changed in (("optimizer.lr", 0.02), ("trainer.max_epochs", 2),
                          ("model.kernel_size", 5), ("data.name", "fashion_mnist")):
        other = json.loads(json.dumps(config))
        group, field = path.split(".")
        other[group][field] = changed
        assert recipe_hash(other) != recipe, path
    assert recipe_hash({**config, "objective": "test_acc"}) != recipe


def test_same_overrides_under_another_recipe_are_not_pooled(multirun, capsys):
    """A YAML edited between two sweeps (or another convexp version) trains something else
    under the same overrides: its seeds are not pooled with the others'."""
    for path in multirun.rglob("summary.json"):
        job = json.loads(path.read_text())
        edited = job["model"] == "standard" and job["seed"] == 2
        path.write_text(json.dumps({**job, "recipe": "bbbbbbbbbbbb" if edited else "aaaaaaaaaaaa"}))
    configs = _by_label(aggregate(load_summaries(multirun)))
    first, second = configs["standard k3 d1 recipe aaaaaaaaaaaa"], configs[
        "standard k3 d1 recipe bbbbbbbbbbbb"]
    assert (first["seeds"], second["seeds"]) == ([0, 1], [2])
    assert "depthwise_dilated k5 d2" in configs  # one recipe: its label as before
    assert main([str(multirun), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert ("Not pooled: standard k3 d1 recipe aaaaaaaaaaaa, standard k3 d1 recipe bbbbbbbbbbbb "
            "have the same overrides but not the same recipe or model") in out
    assert "Not pooled" in (multirun / "report" / "comparison.md").read_text()
    # A job that recorded no recipe (an older summary) joins its configuration's one recipe.
    for path in multirun.rglob("summary.json"):
        job = json.loads(path.read_text())
        job.pop("recipe") if job["seed"] == 0 else job.update(recipe="aaaaaaaaaaaa")
        path.write_text(json.dumps(job))
    configs = _by_label(aggregate(load_summaries(multirun)))
    assert configs["standard k3 d1"]["seeds"] == [0, 1, 2]
    assert main([str(multirun), "--no-plots"]) == 0
    assert "Not pooled" not in capsys.readouterr().out


def test_same_overrides_and_config_but_another_model_built_are_not_pooled(multirun):
    """Another version of convexp can build another net from the same config (summaries from
    before the recipe was recorded have none): the params and MACs tell them apart."""
    for path in multirun.rglob("summary.json"):
        job = json.loads(path.read_text())
        if job["model"] == "standard" and job["seed"] == 2:
            job.update(params=24000, macs=24000 * 50)
        path.write_text(json.dumps(job))
    configs = _by_label(aggregate(load_summaries(multirun)))
    assert configs["standard k3 d1 20,000 params 1,000,000 MACs"]["seeds"] == [0, 1]
    assert configs["standard k3 d1 24,000 params 1,200,000 MACs"]["seeds"] == [2]


def test_the_same_seed_under_two_recipes_is_no_repeat(multirun, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(multirun, copy)
    for folder, recipe in ((multirun, "aaaaaaaaaaaa"), (copy, "cccccccccccc")):
        for path in folder.rglob("summary.json"):
            path.write_text(json.dumps({**json.loads(path.read_text()), "recipe": recipe}))
    assert main([str(multirun), str(copy), "--no-plots", "--out", str(tmp_path / "r")]) == 0
    assert "Not pooled: standard k3 d1 recipe aaaaaaaaaaaa, standard k3 d1 recipe ccccccccc" in (
        capsys.readouterr().out)


# ----------------------------------------------------------------------------- statistics

from convexp.compare import (  # noqa: E402
    betainc,
    compact_override,
    cost_axes,
    erf_rows,
    format_float,
    heatmap_data,
    log_report_to_wandb,
    operator_of,
    pareto_front,
    t_two_sided_p,
    welch_t_test,
)


def test_student_t_p_values_in_closed_form():
    # df = 1 is the Cauchy distribution: P(|T| >= t) = 1 - 2 atan(t) / pi.
    for t in (0.0, 0.5, 1.0, 3.0, 40.0):
        assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 * np.arctan(t) / np.pi, rel=1e-12)
    # df = 2: P(|T| >= t) = 1 - t / sqrt(2 + t^2).
    for t in (0.1, 1.0, 4.3027, 100.0):
        assert t_two_sided_p(t, 2) == pytest.approx(1 - t / np.sqrt(2 + t * t), rel=1e-10)
    assert t_two_sided_p(-1.0, 2) == t_two_sided_p(1.0, 2)
    assert t_two_sided_p(float("inf"), 3) == 0.0
    # Textbook critical values: t(0.975, df) gives p = 0.05.
    for df, critical in ((5, 2.570582), (10, 2.228139), (30, 2.042272)):
        assert t_two_sided_p(critical, df) == pytest.approx(0.05, rel=1e-5)


def test_betainc_and_welch_match_scipy():
    scipy_special = pytest.importorskip("scipy.special")
    stats = pytest.importorskip("scipy.stats")
    for a in (0.5, 1.0, 1.7, 4.0, 25.0):
        for b in (0.5, 2.0, 9.5):
            for x in (1e-6, 0.01, 0.3, 0.5, 0.77, 0.999):
                assert betainc(a, b, x) == pytest.approx(
                    scipy_special.betainc(a, b, x), rel=1e-9, abs=1e-14
                )
    rng = np.random.default_rng(0)
    for n_a, n_b in ((2, 2), (3, 5), (2, 7), (10, 4), (30, 30)):
        for scale_b in (0.1, 1.0, 5.0):
            a = rng.normal(0.99, 0.002, n_a)
            b = rng.normal(0.988, 0.002 * scale_b, n_b)
            ours = welch_t_test(list(a), list(b))
            ref = stats.ttest_ind(a, b, equal_var=False)
            assert ours.t == pytest.approx(ref.statistic, rel=1e-10)
            assert ours.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-15)
            assert ours.df == pytest.approx(ref.df, rel=1e-10)
            assert (ours.n_a, ours.n_b) == (n_a, n_b)


def test_welch_edge_cases():
    assert welch_t_test([0.99], [0.98, 0.97]) is None  # n = 1: no variance, no test
    assert welch_t_test([0.99, float("nan")], [0.98, 0.97]) is None  # nan is not a seed
    same = welch_t_test([0.99, 0.99], [0.99, 0.99])
    assert (same.t, same.p) == (0.0, 1.0)
    apart = welch_t_test([0.99, 0.99], [0.98, 0.98])
    assert apart.t == float("inf") and apart.p == 0.0
    one_sided_variance = welch_t_test([0.99, 0.99, 0.99], [0.98, 0.982, 0.978])
    assert one_sided_variance.df == pytest.approx(2.0)  # Welch df = n_b - 1 then


# ----------------------------------------------------------------------------- formatting


def test_float_overrides_print_compactly():
    assert format_float(0.0031622776601683794) == "0.00316"
    assert format_float(0.01) == "0.01"
    assert format_float(3e-5) == "3e-5"
    assert format_float(12345.678) == "1.23e4"
    assert compact_override("optimizer.lr=0.0031622776601683794") == "optimizer.lr=0.00316"
    assert compact_override("optimizer.lr=1e-2") == "optimizer.lr=1e-2"  # already short
    assert compact_override("optimizer.weight_decay=0.01") == "optimizer.weight_decay=0.01"
    assert compact_override("data.batch_size=128") == "data.batch_size=128"
    assert compact_override("model.channels=[16,32]") == "model.channels=[16,32]"
    assert compact_override("+tag=v1.2.3") == "+tag=v1.2.3"

    jobs = []
    for n, lr in enumerate((0.0031622776601683794, 0.012589254117941673)):
        job = _summary("standard", 3, 1, 0, 0.99 - n / 100)
        job["overrides"] += [f"optimizer.lr={lr}"]
        job["job_dir"] = str(n)
        jobs.append(job)
    labels = [c["label"] for c in aggregate(jobs)]
    assert labels == ["standard k3 d1 optimizer.lr=0.00316", "standard k3 d1 optimizer.lr=0.0126"]
    failed = dict(jobs[0], status="failed", reason="boom", job_dir="9")
    text = render_text(Path("x"), [failed], aggregate([failed]))
    assert "optimizer.lr=0.00316]: boom" in text and "0.0031622776601683794" not in text


def test_operator_family_from_model_name():
    assert operator_of("standard") == operator_of("dilated") == "standard conv"
    assert operator_of("depthwise_separable") == "depthwise-separable conv"
    assert operator_of("depthwise_dilated") == "depthwise-separable conv"
    assert operator_of("book_cnn") == "book_cnn"
    assert operator_of("my_net") == "my_net"


# ----------------------------------------------------------------------------- Pareto


def _cfg(label, acc, macs, operator="standard conv"):
    return {"label": label, "objective_mean": acc, "macs": macs, "operator": operator}


def test_pareto_front_keeps_exactly_the_undominated():
    macs_axis = next(a for a in COST_AXES if a.name == "macs")
    configs = [
        _cfg("cheap", 0.980, 1e6),
        _cfg("mid", 0.990, 2e6),
        _cfg("dominated", 0.985, 3e6),  # mid is cheaper and better
        _cfg("tie-dominated", 0.990, 2.5e6),  # mid: equal accuracy, cheaper
        _cfg("best", 0.992, 4e6),
        _cfg("worse-and-dearer", 0.970, 5e6),
        _cfg("no cost", 0.999, None),  # not on this axis
        _cfg("failed", None, 1e5),
    ]
    front = [c["label"] for c in pareto_front(configs, macs_axis)]
    assert front == ["cheap", "mid", "best"]
    # duplicates of one point are all on the front (neither beats the other)
    twins = [_cfg("a", 0.99, 1e6), _cfg("b", 0.99, 1e6)]
    assert [c["label"] for c in pareto_front(twins, macs_axis)] == ["a", "b"]


# ----------------------------------------------------------------------------- a sweep


SWEEP_KERNELS, SWEEP_DILATIONS, SWEEP_SEEDS = (3, 5), (1, 2), (0, 1)


def _sweep_summary(model, k, d, seed):
    """A job of `kernel_dilation_sweep` as convexp writes it (channels [32, 64], 28x28)."""
    separable = model.startswith("depthwise")
    if separable:
        params = 32 * k * k + 1024 + 32 * k * k + 2048 + 192 + 31370
        macs = 25088 * k * k + 802816 + 6272 * k * k + 401408 + 31360
        variant = "depthwise_dilated" if d > 1 else "depthwise_separable"
    else:
        params = 2080 * k * k + 192 + 31370
        macs = 25088 * k * k + 401408 * k * k + 31360
        variant = "dilated" if d > 1 else "standard"
    standard_params = 2080 * k * k + 192 + 31370
    standard_macs = 25088 * k * k + 401408 * k * k + 31360
    # A little better with a bigger kernel; dilation helps the separable net; seed noise.
    acc = 0.9900 + 0.0008 * (k == 5) + (0.0006 * (d - 1) if separable else -0.0004 * (d - 1))
    acc -= 0.0012 * separable
    acc += (0.0003, -0.0002)[seed] + 0.0001 * ((k + d) % 2)
    speed = (2300 if separable else 1900) / (1 + 0.08 * (k - 3)) / (1 + 0.15 * (d - 1))
    return {
        "status": "completed",
        "reason": None,
        "model": model,
        "variant": variant,
        "kernel_size": k,
        "dilation": d,
        "channels": [32, 64],
        "padding": "same",
        "seed": seed,
        "params": params,
        "macs": macs,
        "receptive_field": 4 + 3 * d * (k - 1),
        "param_ratio_vs_standard": params / standard_params,
        "macs_ratio_vs_standard": macs / standard_macs,
        "test_acc": round(acc, 4),
        "best_val_acc": round(acc - 0.001, 4),
        "final_val_acc": round(acc - 0.0015, 4),
        "train_samples_per_s": speed * (1 + 0.01 * seed),
        "inference_ms_per_image": 1000 / speed / 4 * (1 + 0.02 * seed),
        "epochs_completed": 3,
        "device": "cpu",
        "compiled": False,
        "wall_s": 90.0,
        "overrides": [
            f"model={model}",
            f"model.kernel_size={k}",
            f"model.dilation={d}",
            f"seed={seed}",
        ],
    }


def _synthetic_erf(rf, gridded, size=28):
    """A Gaussian-ish ERF filling the RF window (centred on 13.5, clipped); every other row
    and column empty when gridded."""
    yy, xx = np.indices((size, size))
    r = np.maximum(np.abs(yy - 13.5), np.abs(xx - 13.5))
    erf = np.exp(-((yy - 13.5) ** 2 + (xx - 13.5) ** 2) / (2 * (rf / 4) ** 2))
    erf[r > rf / 2] = 0.0
    if gridded:
        erf[(yy - 9) % 2 == 1] = 0.0
        erf[:, (np.arange(size) - 9) % 2 == 1] = 0.0
    return erf / erf.max()


def _build_sweep(root):
    """2 operators x 2 kernels x 2 dilations x 2 seeds, with ERFs and latencies; one old job
    without the new fields (no ERF, no latency)."""
    jobs = [
        _sweep_summary(model, k, d, seed)
        for model in ("standard", "depthwise_separable")
        for k in SWEEP_KERNELS
        for d in SWEEP_DILATIONS
        for seed in SWEEP_SEEDS
    ]
    for n, job in enumerate(jobs):
        job_dir = root / str(n)
        job_dir.mkdir(parents=True)
        if (job["kernel_size"], job["dilation"], job["seed"]) != (5, 1, 1):
            gridded = job["model"].startswith("depthwise") and job["dilation"] > 1
            erf = _synthetic_erf(job["receptive_field"], gridded)
            np.save(job_dir / "erf.npy", erf)
            job.update(erf_npy="erf.npy", erf_95=float(job["receptive_field"]))
        else:  # an old job
            del job["inference_ms_per_image"]
        (job_dir / "summary.json").write_text(json.dumps(job))
    return root


@pytest.fixture
def sweep(tmp_path):
    return _build_sweep(tmp_path / "multirun")


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    """The sweep with its full report (plots included) written once: (multirun dir, stdout)."""
    root = _build_sweep(tmp_path_factory.mktemp("sweep") / "multirun")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main([str(root)]) == 0
    return root, stdout.getvalue()


def test_sweep_heatmap_merges_variants_into_operators(sweep):
    configs = aggregate(load_summaries(sweep))
    operators, kernels, dilations, grids = heatmap_data(configs)
    assert operators == ["standard conv", "depthwise-separable conv"]
    assert (kernels, dilations) == ([3, 5], [1, 2])
    for op in operators:  # standard (d1) and dilated (d2) share one panel
        assert sorted(grids[op]) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    variants = {c["variant"] for c in grids["standard conv"][0, 0] + grids["standard conv"][0, 1]}
    assert variants == {"standard", "dilated"}


def test_sweep_cost_axes_and_measured_costs(sweep):
    configs = _by_label(aggregate(load_summaries(sweep)))
    assert [a.name for a in cost_axes(list(configs.values()))] == [
        "macs",
        "params",
        "train_time",
        "inference",
    ]
    c = configs["dilated k3 d2"]
    speeds = [_sweep_summary("standard", 3, 2, s)["train_samples_per_s"] for s in SWEEP_SEEDS]
    per_sample = [1e6 / v for v in speeds]
    assert c["train_us_per_sample_mean"] == pytest.approx(np.mean(per_sample))
    assert c["train_us_per_sample_std"] == pytest.approx(np.std(per_sample, ddof=1))
    assert c["inference_ms_per_image_n"] == 2
    assert configs["standard k5 d1"]["inference_ms_per_image_n"] == 1  # the old job has none
    # dilation costs nothing in MACs: both dilations of a kernel tie on that axis
    assert c["macs"] == configs["standard k3 d1"]["macs"]
    macs_axis = next(a for a in COST_AXES if a.name == "macs")
    front = [x["label"] for x in pareto_front(list(configs.values()), macs_axis)]
    # separable k3 d2 is the cheapest; a better one at no more MACs doesn't exist below it
    assert front[0] == "depthwise_dilated k3 d2"
    for label in front:  # on the front, accuracy rises with cost
        assert configs[label]["macs"] == min(
            x["macs"]
            for x in configs.values()
            if x["test_acc_mean"] >= configs[label]["test_acc_mean"]
        )


def test_sweep_erf_rows_average_seeds_and_find_holes(sweep):
    configs = aggregate(load_summaries(sweep))
    rows = {(r["operator"], r["kernel"], r["dilation"]): r for r in erf_rows(configs, sweep)}
    assert len(rows) == 8
    gridded = rows["depthwise-separable conv", 3, 2]
    assert gridded["n"] == 2 and gridded["erf"].max() == pytest.approx(1.0)
    assert gridded["stats"]["rf_holes"] > 0.5
    assert rows["standard conv", 3, 2]["stats"]["rf_holes"] == 0.0
    assert rows["standard conv", 5, 1]["n"] == 1  # the old job saved no ERF
    assert rows["standard conv", 3, 1]["stats"]["rf_window"] == [9, 9, 18, 18]  # RF 10 px
    assert erf_rows(configs, None) == []


def _png_size(path):
    from matplotlib.image import imread

    return imread(path).shape[:2]


def test_sweep_report_writes_every_plot(sweep_report):
    sweep, stdout = sweep_report
    report = sweep / "report"
    names = [
        "acc_vs_cost",
        "acc_vs_macs",
        "acc_vs_params",
        "acc_vs_train_time",
        "acc_vs_inference",
        "heatmap",
        "erf",
    ]
    for name in names:
        path = report / f"{name}.png"
        assert path.read_bytes().startswith(PNG_SIGNATURE), name
        height, width = _png_size(path)
        assert height > 300 and width > 300, name
    assert f"comparison.md, {', '.join(n + '.png' for n in names)}" in stdout
    markdown = (report / "comparison.md").read_text()
    assert "## Accuracy for its cost" in markdown
    assert "Pareto front on MACs per image: depthwise_dilated k3 d2" in markdown
    assert "Pareto front on inference latency" in markdown
    assert "![acc_vs_cost.png](acc_vs_cost.png)" in markdown
    assert "## Effective receptive field" in markdown and "![erf.png](erf.png)" in markdown
    erf_lines = [
        line
        for line in markdown.splitlines()
        if line.startswith("| depthwise-separable conv | 3 | 2 |")
    ]
    assert len(erf_lines) == 1 and "| 16 |" in erf_lines[0]  # theoretical RF 16
    assert "inference ms/image" in markdown and "ERF 95% (px)" in markdown
    with (report / "comparison.csv").open() as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    assert rows["standard k3 d1"]["operator"] == "standard conv"
    assert float(rows["standard k3 d1"]["inference_ms_per_image_mean"]) > 0


def test_sweep_erf_grid_from_images_when_no_arrays(sweep, tmp_path):
    from convexp import erf_maps
    for job_dir in sorted(sweep.iterdir()):  # kernel 3 jobs keep a PNG only
        summary = json.loads((job_dir / "summary.json").read_text())
        if summary.get("erf_npy") and summary["kernel_size"] == 3:
            erf = np.load(job_dir / "erf.npy")
            erf_maps.save_erf_png(erf, job_dir / "erf.png", "x", summary["receptive_field"])
            summary.update(erf_png="erf.png", erf_npy=None)
            (job_dir / "summary.json").write_text(json.dumps(summary))
    rows = erf_rows(aggregate(load_summaries(sweep)), sweep)
    from_png = [r for r in rows if r["kernel"] == 3]
    assert from_png and all(r["erf"] is None and r["png"].name == "erf.png" for r in from_png)
    assert all(r["erf"] is not None for r in rows if r["kernel"] == 5)
    path = convexp.compare.plot_erf_grid(rows, tmp_path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)


# ----------------------------------------------------------------------------- W&B


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DIR": str(tmp_path),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),  # artifact staging (the table)
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def test_report_logged_to_one_wandb_run(sweep, offline_wandb):
    pytest.importorskip("wandb")
    from conftest import wandb_inspect

    assert main([str(sweep), "--no-plots"]) == 0
    report = sweep / "report"
    configs = aggregate(load_summaries(sweep))
    run_id = log_report_to_wandb(
        configs, report, project="convexp-test", entity=None, group="sweep-1", mode="offline"
    )
    run = wandb_inspect(report)
    assert run["run_id"] == run_id
    assert run["state"] == "finished" and run["exit_code"] == 0
    assert run["project"] == "convexp-test"
    records = wandb_inspect(report, summary=False)
    (run_record,) = [r["run"] for r in records if r["type"] == "run"]
    assert run_record["job_type"] == "report" and run_record["run_group"] == "sweep-1"
    assert run_record["display_name"] == "report"
    summary = run["summary"]
    assert summary["comparison"]["_type"] == "table-file"
    assert summary["comparison"]["nrows"] == 8
    # The table itself, as W&B stored it: the CSV's columns and typed values.
    (offline,) = (report / "wandb").glob("offline-run-*")
    logged = json.loads((offline / "files" / summary["comparison"]["path"]).read_text())
    with (report / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert logged["columns"] == list(rows[0])
    label, acc = logged["columns"].index("label"), logged["columns"].index("test_acc_mean")
    assert [r[label] for r in logged["data"]] == [r["label"] for r in rows]
    assert [r[acc] for r in logged["data"]] == [float(r["test_acc_mean"]) for r in rows]
    assert summary["best_label"] == aggregate(load_summaries(sweep))[0]["label"]


def test_report_plots_logged_as_images(sweep_report, offline_wandb):
    pytest.importorskip("wandb")
    from conftest import wandb_inspect

    report = offline_wandb / "report"
    shutil.copytree(sweep_report[0] / "report", report)
    configs = aggregate(load_summaries(sweep_report[0]))
    log_report_to_wandb(configs, report, project="convexp-test", group="g2", mode="offline")
    summary = wandb_inspect(report)["summary"]
    for png in report.glob("*.png"):
        assert summary[png.stem]["_type"] == "image-file", png.name


def test_cli_wandb_flag_logs_into_the_group_its_jobs_recorded(sweep, offline_wandb, capsys):
    pytest.importorskip("wandb")
    from conftest import wandb_inspect

    group = "sweep-2026-12-01_22-17-55_1d03fc"  # what the jobs logged into, not the dir's name
    for path in sweep.glob("*/summary.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "wandb_group": group}))
    args = [str(sweep), "--no-plots", "--wandb", "--project", "convexp-test"]
    assert main([*args, "--wandb-mode", "offline"]) == 0
    assert (
        f"Report logged to W&B: project convexp-test, group {group}, run" in capsys.readouterr().out
    )
    records = wandb_inspect(sweep / "report", summary=False)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["run_group"] == group and run["job_type"] == "report"


def test_report_group_recorded_else_computed_as_the_jobs_did_and_overridable(sweep):
    from convexp.naming import sweep_group as sweep_name
    from convexp.report.wandb_upload import report_group

    old = load_summaries(sweep)  # written before jobs recorded their group
    assert report_group(old, sweep) == sweep_name(str(sweep), None)
    assert report_group(old, sweep, experiment="textbook") == sweep_name(str(sweep), "textbook")
    recorded = [{**s, "wandb_group": "mine"} for s in old]
    assert report_group(recorded, sweep, experiment="textbook") == "mine"
    assert report_group(recorded, sweep, group="override") == "override"


def test_report_upload_obeys_the_process_online_decision(sweep, offline_wandb, monkeypatch):
    """With a key, mode=online, and online W&B given up earlier in this process (as the jobs
    of a sweep do when the server never answers), the report goes offline at once: an
    offline-run-* that `wandb sync` uploads, no second wait."""
    pytest.importorskip("wandb")
    import convexp.wandb_env

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setattr(convexp.wandb_env, "_online_unavailable", "server never answered")

    def no_probe(*args, **kwargs):
        raise AssertionError("probed the host again")

    monkeypatch.setattr(convexp.wandb_env, "probe_wandb_host", no_probe)
    assert main([str(sweep), "--no-plots"]) == 0
    configs = aggregate(load_summaries(sweep))
    log_report_to_wandb(configs, sweep / "report", group="g", mode="online")
    assert len(list((sweep / "report" / "wandb").glob("offline-run-*"))) == 1
    assert not list((sweep / "report" / "wandb").glob("run-*"))


def test_report_obeys_the_decision_its_jobs_recorded_in_other_processes(sweep, offline_wandb,
                                                                        monkeypatch):
    """Under joblib or submitit the jobs decide in their own processes; the report reads the
    decision from their summaries (`wandb_online_unavailable`) and goes offline at once."""
    pytest.importorskip("wandb")
    import convexp.wandb_env
    from convexp.report.wandb_upload import obey_the_jobs_decision

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setattr(convexp.wandb_env, "_online_unavailable", None)

    def no_probe(*args, **kwargs):
        raise AssertionError("probed the host again")

    monkeypatch.setattr(convexp.wandb_env, "probe_wandb_host", no_probe)
    summaries = [{**s, "wandb_online_unavailable": "host never answered"}
                 for s in load_summaries(sweep)]
    obey_the_jobs_decision(summaries)
    assert convexp.wandb_env.online_unavailable() == "host never answered"
    assert main([str(sweep), "--no-plots"]) == 0
    log_report_to_wandb(aggregate(summaries), sweep / "report", group="g", mode="online")
    assert len(list((sweep / "report" / "wandb").glob("offline-run-*"))) == 1
    assert not list((sweep / "report" / "wandb").glob("run-*"))


def test_wandb_run_is_finished_when_logging_fails(sweep, offline_wandb, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from conftest import wandb_inspect

    assert main([str(sweep), "--no-plots"]) == 0

    def broken_table(*args, **kwargs):
        raise RuntimeError("table broke")

    monkeypatch.setattr(wandb, "Table", broken_table)
    configs = aggregate(load_summaries(sweep))
    with pytest.raises(RuntimeError, match="table broke"):
        log_report_to_wandb(configs, sweep / "report", group="g", mode="offline")
    run = wandb_inspect(sweep / "report")
    assert run["state"] == "failed" and run["exit_code"] == 1  # finished, not left running
    with pytest.raises(FileNotFoundError, match="write the report first"):
        log_report_to_wandb(configs, sweep / "nowhere", mode="offline")


# ----------------------------------------------------------------------------- light import


def test_compare_imports_no_torch(tmp_path):
    """`python -m convexp.compare` must not need torch: the package (its public API is loaded
    lazily), the report and the ERF pictures load with torch blocked."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import convexp, convexp.compare, convexp.erf_maps\n"
        "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]\n"
        f"sys.exit(convexp.compare.main([{str(tmp_path)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr  # imports fine; an empty dir exits 2
    assert "no summary.json files" in proc.stderr


def test_a_single_seed_best_is_not_the_reference():
    jobs = [_summary("standard", 3, 1, 0, 0.995)]  # best, one seed
    jobs += [_summary("dilated", 3, 2, s, acc) for s, acc in enumerate([0.990, 0.991, 0.992])]
    jobs += [_summary("depthwise_separable", 3, 1, s, acc) for s, acc in enumerate([0.97, 0.972])]
    for n, job in enumerate(jobs):
        job["job_dir"] = str(n)
    configs = aggregate(jobs)
    assert convexp.compare.reference_config(configs)["label"] == "dilated k3 d2"
    notes = "\n".join(noise_notes(configs))
    assert (
        "the reference for the test is the best configuration with at least two seeds: "
        "dilated k3 d2" in notes
    )
    assert "dilated k3 d2 vs standard k3 d1: -0.40 pp; cannot be tested (n = 3 vs 1)" in notes
    assert "Significantly behind dilated k3 d2 (p < 0.05): depthwise_separable k3 d1." in notes
    headers, rows = convexp.compare.table(configs)
    p_col = headers.index("p vs best")
    # 0.991 vs 0.971: se = sqrt(1e-6/3 + 2e-6/2) = 1.155e-3, t = 17.3, df = 1.68, p = 0.0068
    assert [row[p_col] for row in rows] == ["n=1", "ref", "0.0068"]
    stats = pytest.importorskip("scipy.stats")
    ref = stats.ttest_ind([0.990, 0.991, 0.992], [0.97, 0.972], equal_var=False)
    assert configs[2]["welch_p_vs_best"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert configs[2]["welch_reference"] == "dilated k3 d2"


def test_a_sweep_whose_report_cannot_be_written_exits_1_with_one_line(sweep, monkeypatch,
                                                                      capsys):
    """A full disk at the report: one `convexp: error:` line naming the cause and the file,
    no traceback, exit 1; the same sweep with room for its report ends normally."""
    import errno

    from omegaconf import OmegaConf

    from convexp import callbacks

    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)},
                                      "runtime": {"choices": {}}},
                            "logger": {"name": "none"}})
    callbacks.ConvexpCallback().on_multirun_end(cfg)  # every job completed: no exit
    assert "comparison report: " in capsys.readouterr().out

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device",
                      str(sweep / "report" / "comparison.csv"))

    monkeypatch.setattr(callbacks, "write_report", full_disk)
    with pytest.raises(SystemExit) as exc:
        callbacks.ConvexpCallback().on_multirun_end(cfg)
    assert exc.value.code == 1
    out = capsys.readouterr().out
    assert ("convexp: error: the comparison report could not be written: no space left on "
            f"device ({sweep / 'report' / 'comparison.csv'})") in out
    assert "Traceback" not in out and "comparison report: " not in out


def test_a_sweep_that_ran_a_seed_twice_compares_it_once(sweep, capsys):
    """`-m seed=0,0` runs one configuration and seed twice: the sweep's report leaves the
    repeat out and says so, rather than count one run as two seeds."""
    from omegaconf import OmegaConf

    from convexp import callbacks

    before = {c["label"]: c["test_acc_n"] for c in aggregate(load_summaries(sweep))}
    first = sorted(sweep.glob("*/summary.json"), key=lambda p: int(p.parent.name))[0].parent
    shutil.copytree(first, sweep / "99")
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)},
                                      "runtime": {"choices": {}}},
                            "logger": {"name": "none"}})
    callbacks.ConvexpCallback().on_multirun_end(cfg)
    out = capsys.readouterr().out
    assert out.startswith(f"sweep done: {len(load_summaries(sweep))} jobs")  # every job counted
    assert f"  job 99 repeats job {first.name} (same configuration and seed): left out" in out
    report = (sweep / "report" / "comparison.md").read_text()
    assert f"{len(load_summaries(sweep)) - 1} jobs in" in report
    with (sweep / "report" / "comparison.csv").open() as f:
        assert {r["label"]: int(r["test_acc_n"]) for r in csv.DictReader(f)} == before
