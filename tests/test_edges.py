"""Trust at the edges (issue 18): a checkpoint never makes convexp import or call what the user
did not name, every `_target_` is a model builder, a top-level append that nothing reads is
refused, and the smaller holes (npy half pairs, NaN and empty arrays, preset overrides on
resume, a malicious pickle, no empty run dir for a refused command) each give one line.

A checkpoint here is crafted as an attacker would craft one (convexp's own format, written
with convexp.checkpoint.save_checkpoint), and its `_target_` names a module of this test's
own whose import leaves a marker file: the marker proves whether it was imported.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_no_result, assert_one_clear_error, cli_env, run_job_until_exit

from convexp.checkpoint import save_checkpoint

# A module with an import-time side effect, and a builder with the builder signature.
EVIL_MODULE = '''
import os
from pathlib import Path
from torch import nn

Path(os.environ["CONVEXP_TEST_MARKER"]).write_text("imported")


def build(cfg, image_shape=(1, 28, 28), num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(image_shape[1] * image_shape[2], num_classes))
'''
TARGET = "evil_models.build"


def convexp(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`python -m convexp ARGS` in tmp_path, with tmp_path/code (evil_models) on PYTHONPATH."""
    env = cli_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path / "code"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    env["CONVEXP_TEST_MARKER"] = str(tmp_path / "marker")
    return subprocess.run([sys.executable, "-m", "convexp", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture
def shared_run(tmp_path) -> Path:
    """A run dir someone shared: its checkpoint's config names evil_models.build, which is
    importable here (as any installed module would be)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "evil_models.py").write_text(EVIL_MODULE)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    run_dir = tmp_path / "shared"
    save_checkpoint(run_dir / "checkpoints" / "last.pt", {
        "config": {"model": {"_target_": TARGET, "name": "evil"}, "seed": 0},
        "model": model.state_dict(), "image_shape": [1, 28, 28], "num_classes": 10,
        "overrides": [], "progress": {"epoch": 1, "global_step": 1},
    })
    return run_dir


def user_model_dir(tmp_path: Path, target: str) -> Path:
    """The user's own --config-dir, with a model file naming `target`."""
    conf = tmp_path / "myconf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "evil.yaml").write_text(f"_target_: {target}\nname: evil\n")
    return conf


# --- 2. a checkpoint is data ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["export", "resume"])
def test_a_checkpoints_target_is_not_imported_unless_named(how, shared_run, tmp_path):
    args = (["mode=export", f"checkpoint={shared_run}"] if how == "export"
            else [f"resume={shared_run}", "trainer.progress=false"])
    proc = convexp(args, tmp_path)
    assert_one_clear_error(proc.returncode, proc.stderr, TARGET, "trust_checkpoint=true")
    assert not (tmp_path / "marker").exists(), "the checkpoint's module was imported"
    assert not (shared_run / "model.onnx").exists()
    assert not (shared_run / "summary.json").exists()


def test_a_different_named_target_does_not_trust_the_checkpoint(shared_run, tmp_path):
    conf = user_model_dir(tmp_path, "my_models.tiny_net")
    proc = convexp(["--config-dir", str(conf), "model=evil", "mode=export",
                    f"checkpoint={shared_run}"], tmp_path)
    assert_one_clear_error(proc.returncode, proc.stderr, TARGET, "my_models.tiny_net")
    assert not (tmp_path / "marker").exists()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["named", "trusted"])
def test_a_checkpoint_target_the_user_names_or_trusts_is_exported(how, shared_run, tmp_path):
    pytest.importorskip("onnx")
    args = (["--config-dir", str(user_model_dir(tmp_path, TARGET)), "model=evil"]
            if how == "named" else ["trust_checkpoint=true"])
    proc = convexp([*args, "mode=export", f"checkpoint={shared_run}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "marker").exists()
    assert (shared_run / "model.onnx").stat().st_size > 0


def test_trust_checkpoint_without_a_checkpoint_is_refused(tmp_path):
    proc = convexp(["trust_checkpoint=true", "debug=fast", f"hydra.run.dir={tmp_path / 'run'}"],
                   tmp_path)
    assert_one_clear_error(proc.returncode, proc.stderr, "trust_checkpoint", "resume=")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("target, needles", [
    ("os.system", ["os.system", "not a Python function"]),
    ("subprocess.Popen", ["subprocess.Popen", "not a Python function"]),
    ("os.path.join", ["os.path.join", "builder's arguments"]),
])
@pytest.mark.slow
def test_every_target_must_be_a_model_builder(target, needles, tmp_path):
    proc = convexp([f"+model._target_={target}", "debug=fast", "trainer.progress=false",
                    f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert_one_clear_error(proc.returncode, proc.stderr, *needles, "def NAME(cfg")
    assert "Traceback" not in proc.stdout


class Payload:
    """Unpickling it would run a shell command."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_malicious_pickle_is_refused_in_one_line(writer, tmp_path):
    run_dir = tmp_path / "shared"
    (run_dir / "checkpoints").mkdir(parents=True)
    path = run_dir / "checkpoints" / "last.pt"
    payload = {"format_version": 1, "x": Payload(tmp_path / "pwned")}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=4))
    proc = convexp(["mode=export", f"checkpoint={run_dir}"], tmp_path)
    line = assert_one_clear_error(proc.returncode, proc.stderr, str(path), "never unpickles")
    assert len(line) < 400, line
    assert not (tmp_path / "pwned").exists()


# --- 5. no top-level append without an effect -----------------------------------------------


@pytest.mark.parametrize("overrides, names", [
    (["+sed=3"], ["'sed'", "seed"]),
    (["+foo=1", "+bar.baz=2"], ["'foo'", "'bar'"]),
])
def test_a_top_level_append_nothing_reads_is_refused(overrides, names, tmp_path, capsys,
                                                      monkeypatch):
    code, err = run_job_until_exit(overrides, tmp_path / "run", capsys,
                                   forbid_training=monkeypatch)
    assert_one_clear_error(code, err, "top-level", "nothing reads", *names)
    assert_no_result(tmp_path / "run")


def test_a_top_level_append_is_refused_on_the_command_line(tmp_path):
    proc = convexp(["+foo=1", "debug=fast", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert_one_clear_error(proc.returncode, proc.stderr, "'foo'", "nothing reads")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
