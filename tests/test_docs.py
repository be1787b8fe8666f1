"""Every command the README and docs/ show is run here, as a user would type it.

* A `$ COMMAND` line in a text block, followed by what it prints: run as shown, and the shown
  lines must be what it prints (a shown line ending in `...` matches the printed line's start).
* A command in a bash block: run as shown, in a scratch folder, with overrides appended that
  shrink the data and the sweep (SHRINK), so the whole set stays within minutes; a run dir or
  sweep dir the docs name (`outputs/...`, `DIR`) is replaced by one this test made.
* Set-up commands (`pip install`, `eval`, `export`, ...) are not run here; `.ci/run` runs the
  install.

A quick test checks that every documented command is one of these kinds, so a command added
to the docs is run from then on.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import cli_env

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SETUP = ("pip ", "eval ", "export ", "cd ", "git ", "source ", "wandb ", "bash ", "ruff ",
         "python -m pytest", "pytest", "sbatch ", "tensorboard ", "nvidia-smi")
# Typed at a prompt with a key press (`<TAB>`): run by the test named.
INTERACTIVE = {"<TAB>": "tests/test_cli_ux.py::test_tab_completion_of_the_console_script_in_bash"}
# Commands that need what this machine cannot have: composed (`--cfg hydra`), not run.
COMPOSE_ONLY = ("hydra/launcher=slurm",)
# Appended to every documented training command: a small real-MNIST run, no W&B.
SHRINK = ["data.train_size=512", "data.val_size=128", "data.test_size=256",
          "trainer.max_epochs=1", "trainer.progress=false"]
RUN_DIR_EXAMPLE = re.compile(r"outputs/(?:multirun/)?\d{4}-\d\d-\d\d/[\w.-]+|\bDIR\b")


@dataclass(frozen=True)
class Command:
    doc: str  # file:line
    text: str  # as shown, comments removed
    shown_output: tuple[str, ...] = ()  # for `$ ` lines: the lines shown below it
    comment: str = ""  # a trailing `# ...` on the command's line

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)


def documented_commands() -> list[Command]:
    """Each command once (the first place that shows it), in the order the docs show them."""
    commands, seen = [], set()
    for path in DOC_FILES:
        lines = path.read_text().splitlines()
        fence, i = None, 0
        while i < len(lines):
            line = lines[i]
            where = f"{path.relative_to(REPO)}:{i + 1}"
            if line.startswith("```"):
                fence = None if fence is not None else (line[3:].strip() or "text")
            elif fence in ("bash", "sh", "shell", "console") and line.strip() and \
                    not line.lstrip().startswith("#"):
                text = line
                while text.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text[:-1] + " " + lines[i].strip()
                commands.append(Command(where, _strip_comment(text), (), _comment(text)))
            elif fence == "text" and line.startswith("$ "):
                output = []
                while i + 1 < len(lines) and not lines[i + 1].startswith(("$ ", "```")):
                    i += 1
                    output.append(lines[i])
                commands.append(Command(where, _strip_comment(line[2:]), tuple(output),
                                        _comment(line[2:])))
            i += 1
    unique = []
    for cmd in commands:
        if (cmd.text, cmd.shown_output) not in seen:
            seen.add((cmd.text, cmd.shown_output))
            unique.append(cmd)
    return unique


def _strip_comment(text: str) -> str:
    """`cmd args   # why` -> `cmd args` (a # inside quotes stays)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return shlex.join(list(lexer))


def _comment(text: str) -> str:
    stripped = _strip_comment(text)
    return text[text.index("#"):] if "#" in text and "#" not in stripped else ""


def is_setup(cmd: Command) -> bool:
    """A set-up command, or one typed at a prompt that a test of its own runs (INTERACTIVE)."""
    return cmd.text.startswith(SETUP) or any(key in cmd.text for key in INTERACTIVE)


def convexp_argv(cmd: Command) -> list[str]:
    """The command as this test runs it: `python -m convexp` / `convexp` / `convexp-compare`
    with this interpreter."""
    argv = cmd.argv
    env_prefix = []
    while argv and re.match(r"^[A-Z_]+=", argv[0]):  # PYTHONPATH=examples python -m ...
        env_prefix.append(argv.pop(0))
    if argv[:2] == ["python", "-m"]:
        argv = [sys.executable, "-m", *argv[2:]]
    elif argv[0] == "convexp":
        argv = [sys.executable, "-m", "convexp", *argv[1:]]
    elif argv[0] == "convexp-compare":
        argv = [sys.executable, "-m", "convexp.compare", *argv[1:]]
    else:
        raise AssertionError(f"{cmd.doc}: not a convexp command: {cmd.text}")
    return env_prefix + argv


def test_every_documented_command_is_run_or_set_up():
    commands = documented_commands()
    assert len(commands) >= 10, commands  # the docs show commands; the parser found them
    for cmd in commands:
        if not is_setup(cmd):
            convexp_argv(cmd)  # raises for a command this test would not know how to run
    for test in INTERACTIVE.values():  # the tests that run the interactive ones exist
        path, _, name = test.partition("::")
        assert f"def {name}(" in (REPO / path).read_text(), test


# --- running them ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made_dirs(tmp_path_factory) -> dict[str, Path]:
    """A finished run (for `checkpoint=` / `resume=` / `mode=export`) and a finished sweep
    (for `convexp.compare DIR`), made the way the docs make them."""
    root = tmp_path_factory.mktemp("made")
    run_dir, sweep_dir = root / "run", root / "sweep"
    env = cli_env(root)
    for args in ([f"hydra.run.dir={run_dir}"],
                 ["-m", "model.dilation=1,2", f"hydra.sweep.dir={sweep_dir}"]):
        cmd = [sys.executable, "-m", "convexp", *args, "logger=none", *SHRINK]
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True,
                              text=True, timeout=3600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return {"run": run_dir, "sweep": sweep_dir}


def prepared(cmd: Command, tmp: Path, made: dict[str, Path]) -> tuple[list[str], dict]:
    argv = convexp_argv(cmd)
    env = cli_env(tmp)
    if "PYTHONPATH not set" not in cmd.comment:  # the docs set it for examples/ models
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "examples"),
                                                          env.get("PYTHONPATH")]))
    while "=" in argv[0] and not argv[0].startswith("/"):
        argv.pop(0)  # the doc's own VAR=value prefix: PYTHONPATH is set above
    is_compare = "convexp.compare" in argv
    multirun = "-m" in argv[3:] or "--multirun" in argv or \
        "experiment=kernel_dilation_sweep" in argv
    out = []
    for arg in argv:
        if RUN_DIR_EXAMPLE.search(arg):
            target = made["sweep"] if is_compare or "multirun" in arg else made["run"]
            arg = RUN_DIR_EXAMPLE.sub(str(target), arg)
        out.append(arg)
    if any(a.startswith("--config-dir") for a in out):
        out = [a if not a.startswith("examples/") else str(REPO / a) for a in out]
    continues_a_run = any(a.startswith(("resume=", "checkpoint=")) for a in out)
    if not is_compare and not continues_a_run and "--help" not in out and \
            not any(a.startswith("-sc") for a in out):
        if any(token in cmd.text for token in COMPOSE_ONLY):
            out += ["--cfg", "hydra"]
        else:
            out += [*SHRINK, "logger=none"]
            if multirun:
                out += _shrink_sweep(out) + [f"hydra.sweep.dir={tmp / 'sweep'}"]
            else:
                out += [f"hydra.run.dir={tmp / 'run'}"]
    return out, env


def _shrink_sweep(argv: list[str]) -> list[str]:
    """Keep at most two values of every swept key; experiment=kernel_dilation_sweep's sweep
    (54 jobs) shrinks to 2."""
    extra = []
    if "experiment=kernel_dilation_sweep" in argv:
        extra += ["model.kernel_size=3", "model.dilation=1", "seed=0"]
    for i, arg in enumerate(argv):
        key, _, value = arg.partition("=")
        if key == "hydra.sweeper.n_trials":
            argv[i] = f"{key}=2"
        if value and "," in value and not value.startswith(("[", "'", '"')) and \
                not key.startswith("hydra."):
            argv[i] = f"{key}={','.join(value.split(',')[:2])}"
    return extra


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [c for c in documented_commands() if not is_setup(c)],
                         ids=lambda c: c.doc)
def test_documented_command_runs(cmd: Command, tmp_path, request):
    made = request.getfixturevalue("made_dirs") if RUN_DIR_EXAMPLE.search(cmd.text) else {}
    argv, env = prepared(cmd, tmp_path, made)
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=3600)
    printed = proc.stdout + proc.stderr
    if cmd.shown_output:
        expected_rc = 2 if cmd.shown_output[0].startswith("convexp: error:") else 0
        assert proc.returncode == expected_rc, (cmd.doc, argv, printed[-3000:])
        for shown in cmd.shown_output:
            shown = shown.rstrip()
            head = shown[:-3].rstrip() if shown.endswith("...") else shown
            assert any(line.startswith(head) for line in printed.splitlines()), (
                f"{cmd.doc}: shown {shown!r}, printed:\n{printed[-3000:]}")
    else:
        ok = (0, 1) if "-m" in argv[3:] else (0,)  # a sweep exits 1 when a job failed
        assert proc.returncode in ok, (cmd.doc, argv, printed[-3000:])
