"""End-to-end sweeps, run as a user would: `python -m convexp -m ...` in a subprocess.

Each sweep runs once per module (module-scoped fixtures) and several tests read its output.
The sweeps the selected tests need are started together, a few at a time, in background
threads as soon as the first of them is asked for: on 2 cores, most of a sweep's wall time is
single-threaded start-up (imports, data, W&B init) and launcher polling, which overlap well.

Sweeps (tiny real-MNIST data: debug=fast with 1,000 training and 500 test images, one epoch):
  basic     basic launcher, logger=wandb (offline): depthwise_dilated, padding=valid,
            dilation 4, kernel 3 (fits) and 7 (collapses the feature map), seeds 0 and 1
  joblib    hydra/launcher=joblib, the valid half of `basic` (kernel 3, seeds 0 and 1)
  submitit  hydra/launcher=submitit_local, the same two jobs
  optuna    hparams_search=optuna with 2 trials
  shrunk    experiment=kernel_dilation_sweep cut down to 2 jobs on the command line
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import statistics
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import PRESET_RUN, cli_env, read_summary, run_cli, wandb_inspect

# debug=fast turns W&B off (logger=none): the basic sweep turns it back on.
# PRESET_RUN, not FAST_RUN: FAST_RUN pins data.batch_size, which the Optuna sweep searches.
TINY = [*PRESET_RUN, "data.train_size=1000", "data.test_size=500"]
# dilation 4: effective kernel d*(k-1)+1 is 9 for k3 and 25 for k7 (see test_grid_arithmetic).
VALID = ["model=depthwise_dilated", "model.padding=valid", "model.kernel_size=3",
         "model.dilation=4", "seed=0,1"]
WITH_INVALID = [*VALID[:2], "model.kernel_size=3,7", *VALID[3:]]

# name -> command-line arguments; dict order is launch priority (longest chains first).
SWEEPS = {
    "basic": [*WITH_INVALID, "logger=wandb", *TINY],
    "submitit": ["hydra/launcher=submitit_local", *VALID, *TINY],
    "joblib": ["hydra/launcher=joblib", *VALID, *TINY],
    "optuna": ["hparams_search=optuna", "hydra.sweeper.n_trials=2", *TINY],
    "shrunk": ["experiment=kernel_dilation_sweep", "model=depthwise_separable",
               "model.kernel_size=3", "model.dilation=1,2", "seed=0", *TINY],
}
MAX_PARALLEL_SWEEPS = 3
SWEEP_TIMEOUT_S = 2000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DONE_LINE = re.compile(
    r"^sweep done: (\d+) jobs, (\d+) completed, (\d+) failed, (\d+) diverged, "
    r"(\d+) interrupted \((.+)\)$", re.M)
# Metrics that a job's summary.json records and a deterministic rerun must reproduce.
RESULT_FIELDS = ("test_acc", "test_loss", "best_val_acc", "final_val_acc", "final_train_loss",
                 "final_train_acc", "steps", "params", "macs")


@dataclass
class Sweep:
    name: str
    proc: subprocess.CompletedProcess
    dir: Path  # the sweep dir: hydra.sweep.dir
    jobs: dict[str, dict] = field(default_factory=dict)  # job dir name -> its summary.json

    @property
    def output(self) -> str:
        return f"STDOUT:\n{self.proc.stdout[-3000:]}\nSTDERR:\n{self.proc.stderr[-3000:]}"

    def done_counts(self) -> tuple[int, ...]:
        """(jobs, completed, failed, diverged, interrupted) from the `sweep done:` line."""
        found = list(DONE_LINE.finditer(self.proc.stdout))
        assert len(found) == 1, f"expected one 'sweep done:' line\n{self.output}"
        *counts, where = found[0].groups()
        assert Path(where) == self.dir
        # it closes the output: only the list of jobs that did not complete, then (when a job
        # completed) where the comparison report went, may follow it
        after = [line for line in self.proc.stdout[found[0].end():].splitlines() if line]
        if completed := int(counts[1]):  # the top-5 table first: its title, then 4-space lines
            assert after[0].startswith("top "), after
            after = [line for line in after[1:] if not line.startswith("    ")]
        report = (f"comparison report: {self.dir / 'report'} (python -m convexp.compare "
                  f"{self.dir})")
        jobs = int(counts[0])
        assert after == [*after[:jobs - completed], *([report] if completed else [])], after
        assert all(line.startswith("  job ") for line in after[:jobs - completed]), after
        return tuple(map(int, counts))

    def by_config(self) -> dict[tuple, dict]:
        """(kernel_size, dilation, seed) -> summary."""
        keyed = {(s["kernel_size"], s["dilation"], s["seed"]): s for s in self.jobs.values()}
        assert len(keyed) == len(self.jobs), "two jobs of the sweep share one configuration"
        return keyed


def _launch(name: str, root: Path) -> Sweep:
    proc = run_cli(SWEEPS[name], root, multirun=True, timeout=SWEEP_TIMEOUT_S)
    sweep_dir = root / "multirun"
    jobs = {p.parent.name: read_summary(p.parent) for p in sweep_dir.glob("*/summary.json")}
    return Sweep(name, proc, sweep_dir, jobs)


class Launcher:
    """Runs sweeps in background threads (subprocess.run releases the GIL while it waits)."""

    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory
        self.pool = ThreadPoolExecutor(MAX_PARALLEL_SWEEPS, thread_name_prefix="sweep")
        self.futures: dict[str, Future] = {}

    def start(self, name: str) -> None:
        if name not in self.futures:
            root = self.tmp_path_factory.mktemp(f"sweep_{name}")
            self.futures[name] = self.pool.submit(_launch, name, root)

    def get(self, name: str) -> Sweep:
        self.start(name)
        return self.futures[name].result()

    def close(self) -> None:
        for future in self.futures.values():
            future.cancel()
        self.pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def launcher(request, tmp_path_factory):
    """Starts at once every sweep that a selected test of this module needs."""
    launcher = Launcher(tmp_path_factory)
    wanted = {name for item in request.session.items
              if getattr(item, "module", None) is request.module
              for name in SWEEPS if f"{name}_sweep" in item.fixturenames}
    for name in SWEEPS:  # in priority order
        if name in wanted:
            launcher.start(name)
    yield launcher
    launcher.close()


@pytest.fixture(scope="module")
def basic_sweep(launcher) -> Sweep:
    return launcher.get("basic")


@pytest.fixture(scope="module")
def joblib_sweep(launcher) -> Sweep:
    return launcher.get("joblib")


@pytest.fixture(scope="module")
def submitit_sweep(launcher) -> Sweep:
    return launcher.get("submitit")


@pytest.fixture(scope="module")
def optuna_sweep(launcher) -> Sweep:
    return launcher.get("optuna")


@pytest.fixture(scope="module")
def shrunk_sweep(launcher) -> Sweep:
    return launcher.get("shrunk")


@pytest.fixture(scope="module")
def basic_wandb(basic_sweep) -> dict[str, dict]:
    """Job dir name -> {"summary": `wandb leet inspect --summary`, "run": the run record}."""
    job_dirs = sorted(basic_sweep.dir / job for job in basic_sweep.jobs)
    with ThreadPoolExecutor(4) as pool:
        summaries = list(pool.map(wandb_inspect, job_dirs))
        records = list(pool.map(lambda d: wandb_inspect(d, summary=False), job_dirs))
    inspected = {}
    for job_dir, summary, recs in zip(job_dirs, summaries, records, strict=True):
        runs = [r["run"] for r in recs if r.get("type") == "run"]
        assert runs, f"no run record in the offline W&B run of {job_dir}"
        inspected[job_dir.name] = {"summary": summary, "run": runs[0]}
    return inspected


@pytest.fixture(scope="module")
def basic_report(basic_sweep):
    """`python -m convexp.compare <sweep dir>` on the basic sweep."""
    return subprocess.run(
        [sys.executable, "-m", "convexp.compare", str(basic_sweep.dir)],
        cwd=basic_sweep.dir.parent, env=cli_env(basic_sweep.dir.parent), capture_output=True,
        text=True, timeout=900)


def _effective_kernel(k: int, d: int) -> int:
    return d * (k - 1) + 1


def _collapsing_block(k: int, d: int, channels=(32, 64), size=28) -> int | None:
    """Index of the first valid-padding block whose input is smaller than the dilated kernel
    (each block: conv, then a 2x2 max pool unless the map is already 1x1)."""
    k_eff = _effective_kernel(k, d)
    for i, _ in enumerate(channels):
        if k_eff > size:
            return i
        size = size - k_eff + 1
        size = size // 2 if size >= 2 else size
    return None


def test_grid_arithmetic():
    """The basic sweep's grid holds exactly one invalid kernel: k7 d4 collapses in block 1
    (28 -> 4 -> pool 2, then a 25-wide kernel), k3 d4 fits (28 -> 20 -> 10 -> 2 -> 1)."""
    assert _effective_kernel(3, 4) == 9 and _collapsing_block(3, 4) is None
    assert _effective_kernel(7, 4) == 25 and _collapsing_block(7, 4) == 1


# ------------------------------------------------------------------ 1. basic launcher + failure


@pytest.mark.slow
def test_basic_sweep_records_the_invalid_job_as_failed(basic_sweep):
    s = basic_sweep
    assert s.proc.returncode == 1, f"a sweep with a failed job must exit non-zero\n{s.output}"
    assert s.done_counts() == (4, 2, 2, 0, 0)
    assert sorted(s.jobs) == ["0", "1", "2", "3"], "one <sweep dir>/<N>/ per job"
    assert sorted(p.name for p in s.dir.iterdir() if p.is_dir() and p.name.isdigit()) == [
        "0", "1", "2", "3"]

    jobs = s.by_config()
    assert set(jobs) == {(3, 4, 0), (3, 4, 1), (7, 4, 0), (7, 4, 1)}
    # One recipe per configuration, the seeds' alike (the failed jobs' too: the report pools
    # each configuration's jobs), and another for another kernel.
    recipes = {key: summary["recipe"] for key, summary in jobs.items()}
    assert recipes[3, 4, 0] == recipes[3, 4, 1] != recipes[7, 4, 0] == recipes[7, 4, 1]
    for job, summary in s.jobs.items():
        assert Path(summary["output_dir"]) == s.dir / job
    for (kernel, dilation, seed), summary in jobs.items():
        assert summary["model"] == "depthwise_dilated" and summary["padding"] == "valid"
        assert f"seed={seed}" in summary["overrides"]
        if kernel == 3:
            assert summary["status"] == "completed", summary
            assert summary["reason"] is None
            assert summary["variant"] == "depthwise_dilated"
            assert 0 <= summary["test_acc"] <= 1 and summary["epochs_completed"] == 1
            assert (s.dir / Path(summary["output_dir"]).name / "metrics.jsonl").is_file()
        else:
            assert summary["status"] == "failed", summary
            reason = summary["reason"]
            block = _collapsing_block(kernel, dilation)
            assert f"features.{block}" in reason, reason
            assert f"effective kernel size of {_effective_kernel(kernel, dilation)}" in reason
            assert "kernel_size=7" in reason and "dilation=4" in reason
            # the closing lines list each failed job with its reason
            job = Path(summary["output_dir"]).name
            assert f"  job {job} failed: {reason}" in s.proc.stdout


# ------------------------------------------------------------------ 2. W&B: one run per job


@pytest.mark.slow
@pytest.mark.slow
def test_each_configuration_shows_its_table_once_and_every_job_logs_it(basic_sweep):
    """The two seeds of kernel 3 share a model config: the console shows its per-layer table
    once, each job's convexp.log holds it."""
    printed = basic_sweep.proc.stdout + basic_sweep.proc.stderr
    assert printed.count("receptive field    RF") == 1, basic_sweep.output
    assert "(per-layer table as above)" in printed
    completed = [d for d, s in basic_sweep.jobs.items() if s["status"] == "completed"]
    assert len(completed) == 2
    for job in completed:
        assert "receptive field    RF" in (basic_sweep.dir / job / "convexp.log").read_text()


def test_wandb_one_offline_run_per_job_in_one_group(basic_sweep, basic_wandb):
    s = basic_sweep
    for job in s.jobs:
        runs = list((s.dir / job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, f"job {job}: expected one offline W&B run, found {runs}"

    run_ids = [w["summary"]["run_id"] for w in basic_wandb.values()]
    assert len(set(run_ids)) == len(s.jobs) == 4, run_ids

    groups = {w["run"].get("run_group") for w in basic_wandb.values()}
    assert len(groups) == 1, f"jobs of one sweep must share one W&B group: {groups}"
    group = groups.pop()
    # null logger.group: the sweep's name, built from the last two parts of the sweep dir
    assert group and group.startswith("sweep-"), group
    assert s.dir.name in group and s.dir.parent.name in group, (group, s.dir)

    for job, w in basic_wandb.items():
        summary, info = s.jobs[job], w["summary"]
        assert info["project"] == "convexp"
        assert info["name"] == (f"depthwise_dilated k{summary['kernel_size']} "
                                f"d{summary['dilation']} s{summary['seed']}")
        config = info["config"]
        assert config["model"]["kernel_size"] == summary["kernel_size"]
        assert config["model"]["dilation"] == summary["dilation"]
        assert config["seed"] == summary["seed"]
        assert info["file"].endswith(f"run-{info['run_id']}.wandb")
        if summary["status"] == "completed":
            assert info["run_id"] == summary["wandb_run_id"]
            for key in ("variant", "kernel_size", "dilation", "seed", "params", "macs"):
                assert config[key] == summary[key], key
            assert info["state"] == "finished" and info["exit_code"] == 0, info
            # tagged with the presets the job came from (debug=fast) and its sweep
            assert info["tags"] == ["fast", group], info["tags"]
            for key in ("status", "test_acc", "best_val_acc"):
                assert info["summary"][key] == summary[key], key
            assert summary["wandb_group"] == group
        else:
            # a job that failed before training still has a W&B run that says why
            assert info["summary"]["status"] == "failed"
            assert info["summary"]["reason"] == summary["reason"]
            assert info["exit_code"] not in (0, None) and info["state"] != "finished", info


@pytest.mark.slow
def test_wandb_failed_run_has_the_top_level_comparison_fields(basic_sweep, basic_wandb):
    failed = [job for job, s in basic_sweep.jobs.items() if s["status"] == "failed"]
    assert failed
    for job in failed:
        summary, config = basic_sweep.jobs[job], basic_wandb[job]["summary"]["config"]
        # what summary.json knows about the job; variant needs only model name and dilation
        expected = {"variant": "depthwise_dilated", "kernel_size": summary["kernel_size"],
                    "dilation": summary["dilation"], "seed": summary["seed"]}
        assert {key: config.get(key) for key in expected} == expected


# ------------------------------------------------------------------ 4. compare report


def _table_rows(text: str) -> list[dict[str, str]]:
    """The printed comparison table as dicts, cut at the column spans of its dash line."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("-----"))
    spans = [m.span() for m in re.finditer(r"-+", lines[rule])]
    spans[-1] = (spans[-1][0], None)  # the last column (reason) runs to the end of the line

    def cells(line: str) -> list[str]:
        return [line[a:b].strip() for a, b in spans]

    header = cells(lines[rule - 1])
    rows = []
    for line in lines[rule + 1:]:
        if not line.strip():
            break
        rows.append(dict(zip(header, cells(line), strict=True)))
    return rows


def _pct(values: list[float]) -> str:
    return f"{statistics.mean(values) * 100:.2f} ± {statistics.stdev(values) * 100:.2f}"


@pytest.mark.slow
def test_compare_report_matches_the_summaries(basic_sweep, basic_report):
    s, report = basic_sweep, basic_report
    assert report.returncode == 0, f"{report.stdout[-3000:]}\n{report.stderr[-3000:]}"
    done = [j for j in s.jobs.values() if j["status"] == "completed"]
    failed = [j for j in s.jobs.values() if j["status"] == "failed"]
    assert len(done) == 2 and len(failed) == 2
    test_accs = [j["test_acc"] for j in done]
    val_accs = [j["best_val_acc"] for j in done]
    reason = failed[0]["reason"]
    assert failed[1]["reason"] == reason

    assert report.stdout.startswith(f"4 jobs in 2 configurations from {s.dir}")
    rows = {(r["kernel"], r["dilation"]): r for r in _table_rows(report.stdout)}
    assert set(rows) == {("3", "4"), ("7", "4")}
    ok, bad = rows["3", "4"], rows["7", "4"]
    assert ok["variant"] == "depthwise_dilated" and ok["status"] == "completed"
    assert ok["test acc (%)"] == _pct(test_accs)
    assert ok["best val acc (%)"] == _pct(val_accs)
    assert ok["seeds"] == "2"  # reasons: in the Failures list (the table fits 120 columns)
    assert bad["status"] == "failed" and bad["seeds"] == "0/2"
    assert bad["test acc (%)"] == "-"
    failures = report.stdout.split("Failures (2):", 1)[1]
    for job in failed:
        assert f"  {Path(job['output_dir']).name}: failed [" in failures
    assert failures.count(reason) == 2

    out = s.dir / "report"
    with (out / "comparison.csv").open(newline="") as f:
        csv_rows = {(r["kernel_size"], r["dilation"]): r for r in csv.DictReader(f)}
    assert set(csv_rows) == {("3", "4"), ("7", "4")}
    ok, bad = csv_rows["3", "4"], csv_rows["7", "4"]
    assert float(ok["test_acc_mean"]) == pytest.approx(statistics.mean(test_accs), abs=1e-12)
    assert float(ok["test_acc_std"]) == pytest.approx(statistics.stdev(test_accs), abs=1e-12)
    assert float(ok["best_val_acc_mean"]) == pytest.approx(statistics.mean(val_accs), abs=1e-12)
    assert float(ok["best_val_acc_std"]) == pytest.approx(statistics.stdev(val_accs), abs=1e-12)
    assert ok["test_acc_n"] == "2" and ok["n_jobs"] == "2" and ok["n_completed"] == "2"
    assert int(ok["params"]) == done[0]["params"] and int(ok["macs"]) == done[0]["macs"]
    assert sorted(json.loads(ok["seeds"])) == [0, 1] and ok["status"] == "completed"
    assert bad["status"] == "failed" and bad["n_completed"] == "0" and bad["n_jobs"] == "2"
    assert bad["test_acc_mean"] == "" and json.loads(bad["reasons"]) == [reason]
    assert (out / "comparison.md").is_file()

    pngs = {p.name: p for p in out.glob("*.png")}
    assert {"acc_vs_cost.png", "acc_vs_params.png", "acc_vs_macs.png", "heatmap.png"} <= set(pngs)
    for path in pngs.values():
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path


# ------------------------------------------------------------------ 3. other launchers


def _same_jobs_as_basic(sweep: Sweep, basic: Sweep) -> list[tuple[dict, dict]]:
    assert sweep.proc.returncode == 0, sweep.output
    assert sweep.done_counts() == (2, 2, 0, 0, 0)
    assert sorted(sweep.jobs) == ["0", "1"]
    reference = basic.by_config()
    pairs = []
    for key, summary in sweep.by_config().items():
        assert key in {(3, 4, 0), (3, 4, 1)}
        assert summary["status"] == "completed", summary
        assert (sweep.dir / Path(summary["output_dir"]).name / "summary.json").is_file()
        pairs.append((summary, reference[key]))
    return pairs


def _assert_matches_reference(summary: dict, reference: dict) -> None:
    """A job run with another torch thread count than the basic launcher's reference job:
    float sums are reduced in another order, so losses agree to ~1e-6 and an accuracy may
    move by a few borderline images. (Measured: the basic launcher with trainer.threads=1
    reproduces the one-thread numbers exactly.) With the same thread count, seeded training on
    CPU gives bit-identical results."""
    if summary["threads"] == reference["threads"]:
        assert {k: summary[k] for k in RESULT_FIELDS} == {k: reference[k] for k in RESULT_FIELDS}
        return
    for key in ("steps", "params", "macs"):
        assert summary[key] == reference[key], key
    for key in ("test_acc", "best_val_acc", "final_val_acc", "final_train_acc"):
        assert summary[key] == pytest.approx(reference[key], abs=0.01), key
    for key in ("test_loss", "final_train_loss"):
        assert summary[key] == pytest.approx(reference[key], rel=1e-3), key


@pytest.mark.slow
def test_submitit_local_launcher_reproduces_the_basic_launcher(submitit_sweep, basic_sweep):
    assert (submitit_sweep.dir / ".submitit").is_dir(), "the jobs did not go through submitit"
    for summary, reference in _same_jobs_as_basic(submitit_sweep, basic_sweep):
        # submitit_local starts every job of the sweep at once: convexp gives each
        # hydra.launcher.cpus_per_task torch threads, 1 when unset, where the basic launcher
        # keeps torch's default.
        assert summary["threads"] == 1
        _assert_matches_reference(summary, reference)


@pytest.mark.slow
def test_joblib_launcher_matches_the_basic_launcher(joblib_sweep, basic_sweep):
    # convexp's joblib launcher (convexp/launchers.py): n_jobs=-1 is one job per core
    assert re.search(r"launching 2 jobs, \d+ at a time, each in a process of its own",
                     joblib_sweep.proc.stdout), joblib_sweep.output
    for summary, reference in _same_jobs_as_basic(joblib_sweep, basic_sweep):
        # joblib runs n_jobs=-1 jobs at once (one per core), and convexp gives each a thread
        # budget of cpu_count // n_jobs torch threads: 1.
        assert summary["threads"] == 1
        _assert_matches_reference(summary, reference)


# ------------------------------------------------------------------ 5. Optuna


@pytest.mark.slow
def test_optuna_search_writes_its_best_trial(optuna_sweep):
    s = optuna_sweep
    assert s.proc.returncode == 0, s.output
    assert s.done_counts() == (2, 2, 0, 0, 0)
    assert sorted(s.jobs) == ["0", "1"]
    results = yaml.safe_load((s.dir / "optimization_results.yaml").read_text())
    best = results["best_params"]
    assert set(best) == {"optimizer.lr", "optimizer.weight_decay", "data.batch_size"}
    assert 1e-4 <= best["optimizer.lr"] <= 3e-2
    assert 1e-6 <= best["optimizer.weight_decay"] <= 1e-1
    assert best["data.batch_size"] in (64, 128, 256, 512)

    assert all(j["status"] == "completed" for j in s.jobs.values())
    best_job = max(s.jobs.values(), key=lambda j: j["best_val_acc"])
    assert results["best_value"] == best_job["best_val_acc"]
    # the best trial's parameters are the ones its job ran with
    overrides = dict(o.split("=", 1) for o in best_job["overrides"])
    for key, value in best.items():
        assert float(overrides[key]) == pytest.approx(value, rel=1e-12), key


# ------------------------------------------------------------------ 6. kernel x dilation sweep


def test_a_joblib_field_the_launcher_does_not_read_is_refused_before_any_job(tmp_path):
    """convexp's joblib launcher runs each job in a process of its own and reads only n_jobs:
    a timeout (or backend, ...) would silently do nothing."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = run_cli(["hydra/launcher=joblib", "hydra.launcher.timeout=5", "seed=0,1", *TINY],
                   tmp_path, multirun=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == ["convexp: error: hydra.launcher.timeout=5.0: convexp's joblib launcher "
                     "runs each job in a process of its own, hydra.launcher.n_jobs at a time, "
                     "and reads no other field of the joblib plugin; drop it"], proc.stderr
    assert not list((tmp_path / "multirun").glob("*/summary.json"))


def test_a_sweep_subdir_that_can_share_a_dir_between_jobs_is_refused(tmp_path):
    """'hydra.sweep.subdir=${model.name}' puts both seeds in one dir: the second job would be
    refused there after Hydra wrote its config over the first's, and vanish from the count."""
    proc = run_cli(["hydra.sweep.subdir=${model.name}", "seed=0,1", *TINY], tmp_path,
                   multirun=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == ["convexp: error: hydra.sweep.subdir=${model.name} can give two jobs of the "
                     "sweep one dir: name each job's own with ${hydra.job.num} (the default) "
                     "or ${hydra.job.override_dirname}"]
    assert not (tmp_path / "multirun").exists()


def test_kernel_dilation_experiment_composes_to_the_full_sweep():
    from hydra import compose, initialize_config_dir
    from hydra.types import RunMode

    import convexp.api  # registers every option's schema
    import convexp.paths
    from convexp.variants import variant_of

    with initialize_config_dir(str(convexp.paths.CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=kernel_dilation_sweep"],
                      return_hydra_config=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN  # no -m needed
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    params = {key: str(value).split(",") for key, value in cfg.hydra.sweeper.params.items()}
    assert params == {
        "model": ["standard", "depthwise_separable"],
        "model.kernel_size": ["3", "5", "7"],
        "model.dilation": ["1", "2", "3"],
        "seed": ["0", "1", "2"],
    }
    grid = list(itertools.product(*params.values()))
    assert len(grid) == 54  # as its header says
    assert {variant_of(model, int(dilation)) for model, _, dilation, _ in grid} == {
        "standard", "dilated", "depthwise_separable", "depthwise_dilated"}
    # Its jobs' W&B runs are tagged with the presets they came from, this experiment's name
    # (as the basic sweep's runs are with debug=fast's, test_wandb_one_offline_run_per_job...).
    assert cfg.hydra.runtime.choices.experiment == "kernel_dilation_sweep"


@pytest.mark.slow
def test_kernel_dilation_experiment_shrinks_from_the_command_line(shrunk_sweep):
    s = shrunk_sweep
    assert s.proc.returncode == 0, s.output
    assert "Launching 2 jobs locally" in s.proc.stdout, s.output
    assert s.done_counts() == (2, 2, 0, 0, 0)
    assert sorted(s.jobs) == ["0", "1"]
    jobs = s.by_config()
    assert set(jobs) == {(3, 1, 0), (3, 2, 0)}
    assert {j["model"] for j in jobs.values()} == {"depthwise_separable"}
    assert jobs[3, 1, 0]["variant"] == "depthwise_separable"
    assert jobs[3, 2, 0]["variant"] == "depthwise_dilated"
    for job in jobs.values():
        assert job["status"] == "completed" and math.isfinite(job["test_acc"])
        assert "experiment=kernel_dilation_sweep" in job["overrides"]
