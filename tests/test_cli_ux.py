"""The command line a Hydra user expects, and live feedback wherever the user waits: a --help
with the everyday commands, a debug group, progress lines without a terminal, job numbers in a
sweep's lines, a quiet export beside its checkpoint, the console script, Optuna with storage."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import cli_command, cli_env, read_summary, run_cli

from convexp.api import compose_config, train

TINY = ["debug=fast", "data.train_size=512", "data.val_size=256", "data.test_size=256"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Independent commands, two at a time (2 cores), each in its own folder."""
    tmp = tmp_path_factory.mktemp("ux")
    commands = {
        "help": (["--help"], False),
        "progress": ([*TINY, "trainer.progress_every_s=0.2", "data.train_size=2000"], False),
        "sweep": ([*TINY, "seed=0,1"], True),
        "optuna": ([*TINY, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                    f"hydra.sweeper.storage=sqlite:///{tmp / 'optuna.db'}"], True),
    }

    def one(name):
        args, multirun = commands[name]
        folder = tmp / name
        folder.mkdir()
        return run_cli(args, folder, multirun=multirun, timeout=1500), folder

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(commands, pool.map(one, commands), strict=True))


def test_help_shows_the_everyday_commands(cli):
    proc, _ = cli["help"]
    assert proc.returncode == 0, proc.stderr
    for command in ("model=depthwise_dilated", "-m ", "mode=summary", "mode=export",
                    "resume=", "convexp.compare", "debug=fast"):
        assert command in proc.stdout, command
    assert "model: book_cnn, depthwise_dilated" in proc.stdout.replace("\n", " ") or (
        "book_cnn" in proc.stdout)
    assert "_schema" not in proc.stdout


def test_debug_group_is_a_small_quick_run():
    cfg = compose_config(["debug=fast"])
    assert (cfg.data.train_size, cfg.data.val_size, cfg.data.test_size) == (8000, 500, 1000)
    assert cfg.data.batch_size == 64  # 125 steps: the default recipe needs more than 30
    assert cfg.trainer.max_epochs == 1 and cfg.logger.name == "none"


def test_progress_lines_without_a_terminal(cli):
    proc, folder = cli["progress"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if " step " in line]
    assert lines, proc.stdout[-2000:]
    assert all("loss" in line and "samples/s" in line for line in lines), lines
    assert read_summary(folder / "run")["status"] == "completed"


def test_sweep_lines_carry_their_job_number(cli):
    proc, folder = cli["sweep"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    for job in (0, 1):
        assert f"[job {job}] epoch 1/1" in output, output[-3000:]
    assert (folder / "multirun" / "report" / "comparison.csv").is_file()


def test_optuna_with_sqlite_storage(cli):
    proc, folder = cli["optuna"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Best value" in proc.stdout + proc.stderr
    assert len(list((folder / "multirun").glob("*/summary.json"))) == 2
    assert (folder.parent / "optuna.db").is_file()  # the study, where storage= put it


def test_api_train_reports_like_the_cli(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="convexp"):
        summary = train([*TINY, "trainer.progress_every_s=0.1"], tmp_path / "run")
    assert summary["status"] == "completed"
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("epoch 1/1") for m in messages), messages
    assert any("test accuracy" in m for m in messages)


@pytest.mark.slow
def test_export_writes_beside_the_checkpoint_quietly(tmp_path):
    run_cli([*TINY], tmp_path, check_rc=0)
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "convexp", "mode=export",
                           f"checkpoint={run_dir}"], cwd=tmp_path, env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert (run_dir / "model.onnx").is_file()
    assert len(lines) <= 2, lines  # convexp's own log line and "wrote ...model.onnx"
    assert not (tmp_path / "outputs").exists(), "export made a run dir of its own"


def test_console_script_is_python_m_convexp(monkeypatch, capsys, tmp_path):
    script = shutil.which("convexp")
    assert script is not None, "the convexp console script is not installed"
    import convexp.__main__ as entry

    tuned = []
    monkeypatch.setattr(entry, "keep_freed_memory", lambda: tuned.append(True))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["convexp", "--help"])
    with pytest.raises(SystemExit) as exc:
        entry.main()
    assert exc.value.code in (0, None)
    assert "Everyday commands" in capsys.readouterr().out
    assert tuned == []  # --help runs no job: no malloc tuning (it would import torch)
    monkeypatch.setattr(sys, "argv", ["convexp", "model=book_cnn", "mode=summary"])
    entry.main()  # a job: malloc is tuned first
    assert tuned == [True] and "24,496" in capsys.readouterr().out


# --- progress on a terminal -----------------------------------------------------------------


def _run_in_a_terminal(args: list[str], cwd, columns: int = 120) -> str:
    """Run `python -m convexp ARGS` with a pseudo-terminal as its stdin, stdout and stderr
    (tqdm and Hydra see a terminal) and return everything it wrote."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(cli_command(args, cwd), stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env=cli_env(cwd))
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=1500) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


def _screen(output: str) -> list[str]:
    """The lines a terminal shows after `output`: a carriage return moves back to the start
    of the line and later characters overwrite earlier ones."""
    lines = []
    for raw in output.split("\n"):
        line, col = [], 0
        for char in raw:
            if char == "\r":
                col = 0
                continue
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
        lines.append("".join(line).rstrip())
    return lines


@pytest.mark.slow
def test_progress_bar_on_a_terminal(tmp_path):
    output = _run_in_a_terminal([*TINY, "model=book_cnn", "data.train_size=256",
                                 "data.batch_size=64", "trainer.max_epochs=2"], tmp_path)
    for epoch in (1, 2):  # the bar is labelled with the epoch it is in
        assert f"epoch {epoch}/2: " in output and "step/s]" in output, output[-3000:]
    screen = _screen(output)
    epoch_lines = [line for line in screen if "train loss" in line]
    assert len(epoch_lines) == 2, screen
    # Each epoch line is on a line of its own (the bar was cleared before it was written),
    # and no bar is left on screen once training has finished.
    assert all(line.split(" - ", 1)[1].startswith("epoch ") for line in epoch_lines), screen
    assert not [line for line in screen if "%|" in line or "step/s" in line], screen
    assert read_summary(tmp_path / "run")["status"] == "completed"


# --- tab completion -------------------------------------------------------------------------


def test_tab_completion_of_the_console_script_in_bash(tmp_path):
    """`eval "$(convexp -sc install=bash)"` completes `convexp model=dep<TAB>` in bash.
    (`python -m convexp -sc install=bash` installs Hydra's completion for `python
    script.py`, which never fires for `python -m convexp`: the docs say so.)"""
    assert shutil.which("convexp"), "the convexp console script is not installed"
    line = "convexp model=dep"
    script = (
        'eval "$(convexp -sc install=bash)"\n'
        f'COMP_LINE="{line}"; COMP_POINT={len(line)}; COMP_WORDS=({line}); COMP_CWORD=1\n'
        "hydra_bash_completion\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n')
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], cwd=tmp_path,
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(proc.stdout.split()) == ["model=depthwise_dilated",
                                           "model=depthwise_separable"], proc.stdout
