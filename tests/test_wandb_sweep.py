"""examples/wandb_sweep.yaml, the W&B Sweep config: its keys are the documented ones, its grid is
the Hydra sweep's, every parameter is an override convexp accepts, and the command line that
`wandb agent` builds from it runs a convexp job with the swept values.

W&B's sweep controller lives on the W&B server, so no sweep is created here: the agent's own
code (wandb.wandb_agent.Agent._command_run) builds the command and environment for one
parameter set, as it does for each run the server hands out, and the test runs them offline."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import cli_env, read_summary, wandb_inspect

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "examples" / "wandb_sweep.yaml"
HYDRA_SWEEP = REPO / "conf" / "experiment" / "kernel_dilation_sweep.yaml"

# The top-level keys of a sweep config (docs.wandb.ai, "Sweep configuration options").
DOCUMENTED_KEYS = {"program", "entity", "project", "description", "name", "method", "metric",
                   "parameters", "early_terminate", "command", "run_cap"}
REQUIRED_KEYS = {"program", "method", "parameters"}
PARAMETER_KEYS = {"values", "value", "distribution", "probabilities", "min", "max", "mu",
                  "sigma", "q", "parameters"}

# One parameter set of the grid, none of them convexp's default.
SWEPT = {"model": "depthwise_separable", "model.kernel_size": 5, "model.dilation": 2,
         "seed": 1}
AGENT_RUN_ID = "agentrun01"  # the run ID the server gives the agent for this set
# What the test adds to the agent's command line: a quick offline run in a known dir.
QUICK = ["debug=fast", "logger=wandb", "data.train_size=256", "data.val_size=128",
         "data.test_size=128", "trainer.progress=false"]


def load_sweep() -> dict:
    return yaml.safe_load(SWEEP.read_text())


def grid(config: dict) -> list[dict]:
    """Every parameter set of a grid sweep, as W&B's grid search runs them (each combination
    once)."""
    names = list(config["parameters"])
    values = [spec["values"] if "values" in spec else [spec["value"]]
              for spec in config["parameters"].values()]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def agent_args(params: dict) -> dict:
    """The `args` of the agent's run command: what the server sends for a parameter set."""
    return {name: {"value": value} for name, value in params.items()}


def test_sweep_config_has_the_documented_keys():
    config = load_sweep()
    assert set(config) <= DOCUMENTED_KEYS, set(config) - DOCUMENTED_KEYS
    assert REQUIRED_KEYS <= set(config)
    assert config["method"] == "grid"
    assert config["metric"] == {"name": "best_val_acc", "goal": "maximize"}
    assert set(config["parameters"]) == {"model", "model.kernel_size", "model.dilation",
                                         "seed"}
    for name, spec in config["parameters"].items():
        assert set(spec) <= PARAMETER_KEYS, name
        assert set(spec) & {"values", "value"}, f"{name}: grid search needs values"


def test_sweep_command_uses_only_macros_the_agent_knows():
    """${args_no_hyphens} gives `name=value` arguments, Hydra's override syntax."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    command = load_sweep()["command"]
    assert command == ["${env}", "${interpreter}", "-m", "convexp", "${args_no_hyphens}"]
    known = set(create_sweep_command_args({"args": {}})) | {"env", "interpreter", "program",
                                                            "args_json_file"}
    macros = [c[2:-1] for c in command if c.startswith("${")]
    assert set(macros) <= known
    args = create_sweep_command_args({"args": agent_args(SWEPT)})["args_no_hyphens"]
    assert args == ["model=depthwise_separable", "model.kernel_size=5", "model.dilation=2",
                    "seed=1"]


def test_grid_is_the_hydra_sweep():
    """The same 54 jobs as `python -m convexp -m experiment=kernel_dilation_sweep`."""
    hydra_params = yaml.safe_load(HYDRA_SWEEP.read_text())["hydra"]["sweeper"]["params"]
    hydra_grid = {tuple((name, value.strip()) for name, value in zip(hydra_params, combo,
                                                                      strict=True))
                  for combo in itertools.product(*(str(v).split(",")
                                                   for v in hydra_params.values()))}
    sweep_grid = grid(load_sweep())
    assert len(sweep_grid) == 54
    assert {tuple((k, str(v)) for k, v in p.items()) for p in sweep_grid} == hydra_grid
    assert SWEPT in sweep_grid


def test_every_parameter_value_is_an_override_convexp_accepts():
    """Each value of each parameter, in a parameter set of the grid, composes and validates
    as convexp's config with that value (one config per value: composing all 54 takes 20 s)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from convexp.api import compose_config
    from convexp.task import REGISTRIES
    from convexp.validate import validate_config

    config = load_sweep()
    base = grid(config)[0]
    checked = 0
    for name, spec in config["parameters"].items():
        for value in spec["values"]:
            params = {**base, name: value}
            args = create_sweep_command_args({"args": agent_args(params)})["args_no_hyphens"]
            cfg = compose_config(args)
            validate_config(cfg, REGISTRIES)
            assert (cfg.model.name, cfg.model.kernel_size, cfg.model.dilation, cfg.seed) == (
                params["model"], params["model.kernel_size"], params["model.dilation"],
                params["seed"]), args
            checked += 1
    assert checked == 11


# --- one run as the agent starts it ------------------------------------------------------------


def agent_command(tmp: Path, params: dict, sweep_command: list) -> tuple[list[str], dict]:
    """The command and environment wandb's agent starts a run with (its own code, with the
    process start caught)."""
    import wandb.wandb_agent as wandb_agent

    started = {}

    class CaughtProcess:
        def __init__(self, command=None, env=None, **kwargs):
            started.update(command=command, env=env)

    with pytest.MonkeyPatch.context() as mp:
        for var in ("WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):  # set by the agent: restored
            mp.setenv(var, "")
        mp.setenv("WANDB_SWEEP_ID", "sweep0123")  # set by `wandb agent` ENTITY/PROJECT/ID
        mp.setenv("WANDB_DIR", str(tmp))
        mp.setattr(wandb_agent, "AgentProcess", CaughtProcess)
        agent = wandb_agent.Agent(api=None, queue=None, sweep_id="sweep0123")
        agent._sweep_command = sweep_command  # as the agent takes it from the sweep config
        agent._command_run({"type": "run", "run_id": AGENT_RUN_ID, "program": "convexp",
                            "args": agent_args(params)})
    return started["command"], started["env"]


def test_agent_command_line(tmp_path):
    command, env = agent_command(tmp_path, SWEPT, load_sweep()["command"])
    assert command == ["/usr/bin/env", "python", "-m", "convexp", "model=depthwise_separable",
                       "model.kernel_size=5", "model.dilation=2", "seed=1"]
    assert env["WANDB_RUN_ID"] == AGENT_RUN_ID
    assert env["WANDB_SWEEP_ID"] == "sweep0123"
    params = yaml.safe_load(Path(env["WANDB_SWEEP_PARAM_PATH"]).read_text())
    assert {k: v["value"] for k, v in params.items() if k != "wandb_version"} == SWEPT


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory):
    """The agent's command for SWEPT, with QUICK appended, run offline as the agent runs it
    (its environment, `python` found on PATH)."""
    tmp = tmp_path_factory.mktemp("wandb_sweep")
    run_dir = tmp / "run"
    command, agent_env = agent_command(
        tmp, SWEPT, [*load_sweep()["command"], *QUICK, f"hydra.run.dir={run_dir}"])
    env = cli_env(tmp)  # offline, W&B's dirs under tmp
    env.update({k: agent_env[k] for k in ("WANDB_RUN_ID", "WANDB_SWEEP_ID",
                                          "WANDB_SWEEP_PARAM_PATH")})
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    assert Path(env["WANDB_SWEEP_PARAM_PATH"]).is_file()  # the agent wrote the parameters
    proc = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir, read_summary(run_dir), wandb_inspect(run_dir)


@pytest.mark.slow
def test_agent_run_trains_the_swept_configuration(agent_run):
    run_dir, summary, _ = agent_run
    assert summary["status"] == "completed"
    assert summary["overrides"][:4] == ["model=depthwise_separable", "model.kernel_size=5",
                                        "model.dilation=2", "seed=1"]
    assert (summary["variant"], summary["kernel_size"], summary["dilation"], summary["seed"]) \
        == ("depthwise_dilated", 5, 2, 1)  # depthwise separable with dilation 2
    assert 0 <= summary["best_val_acc"] <= 1


@pytest.mark.slow
def test_agent_run_reports_to_the_sweep(agent_run):
    """The W&B run has the agent's run ID (W&B ignores the ID convexp asks for in a sweep),
    the swept parameters as config keys (what the controller reads back), the sweep's metric
    at the top of its summary, and the resolved model section, which the parameter `model`
    shadows, under model_config."""
    _, summary, run = agent_run
    assert run["run_id"] == AGENT_RUN_ID
    assert run["state"] == "finished"
    config = run["config"]
    for name, value in SWEPT.items():
        assert config[name] == value, name
    assert config["variant"] == "depthwise_dilated"
    # named for what it built: model=depthwise_separable with dilation 2 is depthwise_dilated
    assert run["name"] == "depthwise_dilated k5 d2 s1"
    assert config["model_config"]["kernel_size"] == 5
    assert config["model_config"]["dilation"] == 2
    assert config["model_config"]["channels"] == [32, 64]
    assert run["summary"]["best_val_acc"] == summary["best_val_acc"]
    assert run["summary"]["status"] == "completed"


@pytest.mark.slow
def test_summary_json_names_the_sweep_run(agent_run):
    _, summary, run = agent_run
    assert summary["wandb_run_id"] == run["run_id"]
