"""convexp.naming: run names from the built variant, one sweep group for the jobs and the report,
and a tag naming the sweep on each of its W&B runs (issues 17.4 and 19.7)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST_RUN, read_summary, run_cli, wandb_inspect

from convexp.naming import (
    config_label,
    group_of_jobs,
    run_name,
    sweep_group,
    sweep_tag,
    sync_glob,
)


@pytest.mark.parametrize(("record", "expected"), [
    ({"variant": "depthwise_dilated", "kernel_size": 5, "dilation": 2, "seed": 1},
     "depthwise_dilated k5 d2 s1"),
    ({"variant": "book_cnn", "seed": 0}, "book_cnn s0"),  # no kernel_size or dilation
    ({"variant": "tiny_net", "dilation": 3, "seed": 2}, "tiny_net d3 s2"),  # a user's model
    # A record without a variant (older summaries): the variant its model and dilation build.
    ({"model": "depthwise_separable", "kernel_size": 3, "dilation": 2, "seed": 0},
     "depthwise_dilated k3 d2 s0"),
])
def test_run_name_is_the_built_variants(record, expected):
    assert run_name(record) == expected
    assert run_name(record).startswith(config_label(
        expected.split()[0], record.get("kernel_size"), record.get("dilation")))


def test_sweep_group_names_the_experiment_and_the_dir():
    sweep_dir = Path("outputs/multirun/2026-12-01/22-17-55_1d03fc")
    assert sweep_group(sweep_dir) == "sweep-2026-12-01_22-17-55_1d03fc"
    assert sweep_group(str(sweep_dir), "kernel_dilation_sweep") == (
        "kernel_dilation_sweep-2026-12-01_22-17-55_1d03fc")
    assert sweep_tag(sweep_dir, "x" * 80) == sweep_group(sweep_dir, "x" * 80)[:64]


def test_group_of_jobs_reuses_the_recorded_group():
    sweep_dir = Path("/tmp/multirun/2026-12-01/22-17-55_1d03fc")
    jobs = [{"wandb_group": "my-group", "overrides": ["experiment=kernel_dilation_sweep"]},
            {"wandb_group": "my-group"}, {"status": "running"}]
    assert group_of_jobs(jobs, sweep_dir) == "my-group"  # logger.group=my-group, not recomputed


def test_group_of_jobs_of_an_older_sweep_dir_is_the_one_its_jobs_got():
    """Summaries written before `wandb_group` existed: the group those jobs were given."""
    sweep_dir = Path("/tmp/multirun/2026-12-01/22-17-55_1d03fc")
    plain = [{"overrides": ["model.dilation=1"]}, {"overrides": ["model.dilation=2"]}]
    assert group_of_jobs(plain, sweep_dir) == sweep_group(sweep_dir)
    preset = [{"overrides": ["experiment=kernel_dilation_sweep", "seed=0"]}]
    assert group_of_jobs(preset, sweep_dir) == sweep_group(sweep_dir, "kernel_dilation_sweep")


def test_naming_and_variants_are_torch_free():
    code = ("import sys, convexp.naming, convexp.variants, convexp.wandb_env; "
            "print(sorted(m for m in ('torch', 'wandb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=600).stdout
    assert json.loads(out.strip().replace("'", '"')) == []


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two jobs of `model=depthwise_separable`, dilation 1 and 2, logged to W&B (offline)."""
    tmp = tmp_path_factory.mktemp("naming")
    proc = run_cli(["model=depthwise_separable", "model.dilation=1,2", "logger=wandb",
                    *FAST_RUN, "data.train_size=500", "data.val_size=200",
                    "data.test_size=200", "model.channels=[4,8]"],
                   tmp, multirun=True, check_rc=0, timeout=1500)
    sweep_dir = tmp / "multirun"
    jobs = {d.name: read_summary(d) for d in sorted(sweep_dir.glob("[0-9]*"))}
    runs = {name: wandb_inspect(sweep_dir / name) for name in jobs}
    return sweep_dir, jobs, runs, proc.stdout + proc.stderr


@pytest.mark.slow
def test_sweep_runs_are_named_for_their_variant_in_their_recorded_group(sweep):
    sweep_dir, jobs, runs, _ = sweep
    assert {s["variant"] for s in jobs.values()} == {"depthwise_separable",
                                                     "depthwise_dilated"}
    group = sweep_group(sweep_dir)
    for name, summary in jobs.items():
        run = runs[name]
        assert run["name"] == run_name(summary)
        assert run["name"].split()[0] == summary["variant"]  # dilation 2: depthwise_dilated
        assert summary["wandb_group"] == group
        assert sweep_tag(sweep_dir) in run["tags"]  # a plain sweep is tagged with its name
    # The report finds the group its jobs logged into.
    assert group_of_jobs(jobs.values(), sweep_dir) == group


@pytest.mark.slow
def test_sweep_says_w_and_b_is_offline_once(sweep):
    sweep_dir, jobs, _, output = sweep
    assert output.count("W&B is offline") == 1, output[-3000:]
    assert f"wandb sync {sync_glob(sweep_dir)}" in output
    assert len(list(sweep_dir.glob("*/wandb/offline-run-*"))) >= len(jobs)
