"""Bad input (issue 4): every case exits non-zero before any training starts, prints one clear
message naming the field or file and what was expected, and leaves nothing behind that looks
like a complete result (no summary.json with status completed, no checkpoint, no metrics).

Most cases run in-process (`compose_config` + `convexp.task.run`, which raises SystemExit(2)
after printing "convexp: error: ..."), a few through `python -m convexp` to check the exit code
and the output a user sees. Hydra composition errors (unknown group option, unknown key, wrong
type) happen before convexp's code runs: they are checked through the CLI and through the
exception `compose_config` raises.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL, cli_env, read_summary, run_cli

from convexp.api import compose_config
from convexp.data import BUNDLED_MNIST, IDX_FILES, IDX_MD5, IMAGES_MAGIC, LABELS_MAGIC
from convexp.runner import Runner
from convexp.task import run

# The in-process runs never need W&B; a case that reaches W&B has already gone wrong.
BASE = [*SMALL, "logger=none"]


# --- helpers --------------------------------------------------------------------------------


def error_chain(exc: BaseException) -> str:
    """An exception's message with its causes, as Hydra prints it on the command line."""
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def run_inprocess(overrides: list[str], out_dir: Path, capsys, monkeypatch=None) -> tuple[int, str]:
    """Compose and run one job as `python -m convexp OVERRIDES` would, in this process.
    Returns (exit code, stderr). With monkeypatch, training itself is forbidden: reaching
    Runner.fit fails the test, which proves the error came before any training."""
    if monkeypatch is not None:
        def no_training(self):
            raise AssertionError("training started: the bad input was not caught beforehand")

        monkeypatch.setattr(Runner, "fit", no_training)
    cfg = compose_config([*BASE, *overrides])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run(cfg, {"output_dir": out_dir, "overrides": list(overrides), "multirun": False})
    return exc.value.code, capsys.readouterr().err


def assert_one_clear_error(code, err: str, *needles: str) -> str:
    """Exit 2, exactly one "convexp: error: ..." line on stderr, no traceback, and the line
    names every needle (the field or file, and what was expected)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit code {code}, expected 2; stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("convexp: error: "), (
        f"expected one 'convexp: error:' line, got:\n{err}")
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in the message: {lines[0]}"
    return lines[0]


def assert_no_result(out_dir: Path) -> None:
    """Nothing that looks like a finished run: at most a summary.json that says failed."""
    summary = out_dir / "summary.json"
    if summary.exists():
        status = json.loads(summary.read_text())["status"]
        assert status != "completed", f"a failed job left summary status {status!r}"
    if out_dir.exists():
        assert not list(out_dir.rglob("*.pt")), "a failed job left a checkpoint"
        assert not (out_dir / "metrics.jsonl").exists(), "a failed job left metrics.jsonl"


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(f">i{array.ndim}i", magic, *array.shape) + array.tobytes()


def write_idx_set(root: Path, n_train: int = 64, n_test: int = 32) -> Path:
    """A small, valid IDX dataset (not MNIST: use it with data.name=other)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        (root / IDX_FILES[f"{part}_images"]).write_bytes(idx_bytes(IMAGES_MAGIC, images))
        (root / IDX_FILES[f"{part}_labels"]).write_bytes(idx_bytes(LABELS_MAGIC, labels))
    return root


# A synthetic IDX set needs its own sizes (SMALL asks for 2,000 training images).
SYNTHETIC = ["data.name=other", "data.train_size=null", "data.val_size=8", "data.test_size=null"]


@pytest.fixture(scope="module")
def mnist_plain(tmp_path_factory) -> Path:
    """The bundled MNIST files, decompressed once."""
    root = tmp_path_factory.mktemp("mnist_plain")
    for stem in IDX_FILES.values():
        (root / stem).write_bytes(gzip.decompress((BUNDLED_MNIST / f"{stem}.gz").read_bytes()))
    return root


def mnist_copy(root: Path, source: Path, replace: dict[str, bytes], gz: bool = False) -> Path:
    """A data.root that links to `source`'s files, except those in `replace` (stem -> bytes)."""
    root.mkdir(parents=True)
    for stem in IDX_FILES.values():
        name = f"{stem}.gz" if gz else stem
        if stem in replace:
            (root / name).write_bytes(replace[stem])
        else:
            (root / name).symlink_to(source / name)
    return root


# --- unknown names --------------------------------------------------------------------------


def test_unknown_model_group_option_cli(tmp_path):
    """`model=nope` fails at composition: Hydra names model/nope and lists the options."""
    proc = run_cli(["model=nope"], tmp_path)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "model/nope" in out and "Traceback" not in out, out
    for option in ("book_cnn", "depthwise_dilated", "standard"):
        assert option in out, f"the available models are not listed:\n{out}"
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("group", ["optimizer", "scheduler", "data", "logger"])
def test_unknown_group_option(group):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as exc:
        compose_config([f"{group}=nope"])
    message = error_chain(exc.value)
    assert f"{group}/nope" in message and "Available options" in message, message


@pytest.mark.parametrize("field, registered", [
    ("model.name", "standard"), ("optimizer.name", "adamw"), ("scheduler.name", "onecycle"),
    ("logger.name", "wandb"),
])
def test_unknown_name_field(field, registered, tmp_path, capsys, monkeypatch):
    code, err = run_inprocess([f"{field}=nope"], tmp_path / "run", capsys, monkeypatch)
    # Names the field and the bad value, and lists what is available.
    assert_one_clear_error(code, err, field, "nope", registered)
    assert_no_result(tmp_path / "run")


# --- unknown keys, wrong types --------------------------------------------------------------


def test_unknown_key_cli(tmp_path):
    proc = run_cli(["model.kernel_sise=5"], tmp_path)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "model.kernel_sise" in out and "not in 'ModelConfig'" in out, out
    assert "Traceback" not in out, out
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("override, key", [
    ("trainer.max_epoch=2", "trainer.max_epoch"),
    ("optimiser.lr=0.1", "optimiser.lr"),
    ("data.batchsize=64", "data.batchsize"),
])
def test_unknown_key(override, key):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as exc:
        compose_config([override])
    assert key in error_chain(exc.value)


def test_unknown_key_appended_with_plus(tmp_path, capsys, monkeypatch):
    override = "+model.kernel_sise=5"
    try:
        compose_config([*BASE, override])
    except Exception as e:  # rejected at composition: fine if it names the key
        assert "model.kernel_sise" in error_chain(e)
        return
    code, err = run_inprocess([override], tmp_path / "run", capsys, monkeypatch)
    assert_one_clear_error(code, err, "model.kernel_sise")
    assert_no_result(tmp_path / "run")


def test_wrong_type_cli(tmp_path):
    proc = run_cli(["trainer.max_epochs=abc"], tmp_path)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "trainer.max_epochs" in out and "Integer" in out, out
    assert "Traceback" not in out, out
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("override, key, expected", [
    ("optimizer.lr=fast", "optimizer.lr", "Float"),
    ("model.kernel_size=3.5", "model.kernel_size", "Integer"),
    ("model.channels=32", "model.channels", "ListConfig"),
    ("model.padding=circular", "model.padding", "same"),  # the valid values are listed
    ("data.shuffle=maybe", "data.shuffle", "not a valid bool"),
    ("trainer.device=tpu", "trainer.device", "cuda"),
    ("seed=abc", "seed", "Integer"),
])
def test_wrong_type(override, key, expected):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as exc:
        compose_config([override])
    message = error_chain(exc.value)
    assert key in message and expected in message, message


# --- out-of-range values --------------------------------------------------------------------


def test_non_positive_lr_cli(tmp_path):
    """As a user sees it: exit 2, one line on stderr, no traceback."""
    proc = run_cli(["optimizer.lr=0"], tmp_path)
    assert_one_clear_error(proc.returncode, proc.stderr, "optimizer.lr=0.0", "must be > 0")
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("override, field, rule", [
    ("optimizer.lr=-0.001", "optimizer.lr", "must be > 0"),
    ("data.batch_size=0", "data.batch_size", "must be > 0"),
    ("data.batch_size=-8", "data.batch_size", "must be > 0"),
    ("trainer.max_epochs=0", "trainer.max_epochs", "must be > 0"),
    ("trainer.max_epochs=-1", "trainer.max_epochs", "must be > 0"),
    ("model.channels=[32,0]", "model.channels", "must all be > 0"),
    ("model.channels=[-4]", "model.channels", "must all be > 0"),
    ("model.kernel_size=0", "model.kernel_size", "must be >= 1"),
    ("model.dilation=0", "model.dilation", "must be >= 1"),
    ("model.dilation=-2", "model.dilation", "must be >= 1"),
])
def test_out_of_range(override, field, rule, tmp_path, capsys, monkeypatch):
    code, err = run_inprocess([override], tmp_path / "run", capsys, monkeypatch)
    assert_one_clear_error(code, err, field, rule)
    assert_no_result(tmp_path / "run")


def test_infinite_lr(tmp_path, capsys, monkeypatch):
    code, err = run_inprocess(["optimizer.lr=inf"], tmp_path / "run", capsys, monkeypatch)
    assert_one_clear_error(code, err, "optimizer.lr")
    assert_no_result(tmp_path / "run")


def test_batch_size_larger_than_training_set(tmp_path, capsys, monkeypatch):
    code, err = run_inprocess(["data.batch_size=4096"], tmp_path / "run", capsys, monkeypatch)
    assert_one_clear_error(code, err, "data.batch_size")
    assert_no_result(tmp_path / "run")


def test_four_step_onecycle(tmp_path, capsys):
    """A valid config: 4 steps under the default onecycle schedule must train (or, at worst,
    be refused with one clear message)."""
    overrides = ["trainer.max_steps=4"]
    cfg = compose_config([*BASE, *overrides])
    try:
        run(cfg, {"output_dir": tmp_path / "run", "overrides": overrides, "multirun": False})
    except SystemExit as exc:
        assert_one_clear_error(exc.code, capsys.readouterr().err, "scheduler")
    else:
        assert read_summary(tmp_path / "run")["steps"] == 4


def unvalidated(override: str, field: str, what: str):
    """A hyperparameter whose bad value used to escape as `what`, a traceback."""
    return pytest.param(override, field, id=field)


@pytest.mark.parametrize("override, field", [
    unvalidated("scheduler.pct_start=1.5", "scheduler.pct_start",
                "OneCycleLR's ValueError('Expected float between 0 and 1 pct_start')"),
    unvalidated("scheduler.div_factor=0", "scheduler.div_factor",
                "OneCycleLR's ZeroDivisionError"),
    unvalidated("optimizer.betas=[1.5,0.999]", "optimizer.betas",
                "torch's ValueError('Invalid beta parameter at index 0')"),
    unvalidated("optimizer.eps=-1", "optimizer.eps", "torch's ValueError('Invalid epsilon')"),
])
def test_hyperparameter_ranges(override, field, tmp_path, capsys, monkeypatch):
    code, err = run_inprocess([override], tmp_path / "run", capsys, monkeypatch)
    assert_one_clear_error(code, err, field)
    assert_no_result(tmp_path / "run")


def test_nesterov_without_momentum(tmp_path, capsys, monkeypatch):
    code, err = run_inprocess(["optimizer=sgd", "optimizer.momentum=0"], tmp_path / "run", capsys,
                              monkeypatch)
    assert_one_clear_error(code, err, "optimizer.nesterov", "optimizer.momentum")
    assert_no_result(tmp_path / "run")


def test_feature_map_collapse(tmp_path, capsys, monkeypatch):
    code, err = run_inprocess(
        ["model.padding=valid", "model.kernel_size=7", "model.dilation=4"], tmp_path / "run",
        capsys, monkeypatch)
    assert_one_clear_error(code, err, "collapses the feature map", "kernel_size=7",
                           "dilation=4")
    assert_no_result(tmp_path / "run")


def test_too_many_stages_for_the_image(tmp_path, capsys):
    """Five pooled stages shrink 28x28 to 1x1: either build the model (BatchNorm on a batch
    of 1x1 maps is fine in training) or reject model.channels with one clear message. (It
    used to crash in the classifier-width dry run: BatchNorm in training mode on one image.)"""
    overrides = ["model.channels=[8,8,8,8,8]", "trainer.max_steps=1"]
    cfg = compose_config([*BASE, *overrides])
    try:
        run(cfg, {"output_dir": tmp_path / "run", "overrides": overrides, "multirun": False})
    except SystemExit as exc:
        assert_one_clear_error(exc.code, capsys.readouterr().err, "model.channels")
        assert_no_result(tmp_path / "run")
    else:
        assert read_summary(tmp_path / "run")["status"] == "completed"


@pytest.mark.parametrize("overrides, needles", [
    (["data.val_size=60000"], ["data.val_size=60000", "the training set has 60000 images"]),
    (["data.val_size=100000"], ["data.val_size=100000", "[0, 59999]"]),
    (["data.val_size=5000", "data.train_size=56000"], ["data.train_size=56000", "[1, 55000]"]),
])
def test_val_size_larger_than_training_set(overrides, needles, tmp_path, capsys, monkeypatch):
    code, err = run_inprocess(overrides, tmp_path / "run", capsys, monkeypatch)
    assert_one_clear_error(code, err, *needles)
    assert_no_result(tmp_path / "run")


# --- IDX files ------------------------------------------------------------------------------


def test_data_root_not_a_folder(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere"
    code, err = run_inprocess([f"data.root={missing}"], tmp_path / "run", capsys, monkeypatch)
    assert_one_clear_error(code, err, f"data.root={missing}", "is not a folder")
    assert_no_result(tmp_path / "run")


def test_missing_idx_file(tmp_path, capsys, monkeypatch):
    root = write_idx_set(tmp_path / "data")
    (root / "t10k-labels-idx1-ubyte").unlink()
    code, err = run_inprocess([*SYNTHETIC, f"data.root={root}"], tmp_path / "run", capsys,
                              monkeypatch)
    assert_one_clear_error(code, err, "missing data file", str(root / "t10k-labels-idx1-ubyte"))
    assert_no_result(tmp_path / "run")


def test_truncated_gz_file(tmp_path, capsys, monkeypatch):
    stem = "train-images-idx3-ubyte"
    whole = (BUNDLED_MNIST / f"{stem}.gz").read_bytes()
    root = mnist_copy(tmp_path / "data", BUNDLED_MNIST, {stem: whole[: len(whole) // 2]}, gz=True)
    code, err = run_inprocess([f"data.root={root}"], tmp_path / "run", capsys, monkeypatch)
    assert_one_clear_error(code, err, str(root / f"{stem}.gz"), "truncated")
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("name", ["mnist", "other"])
def test_truncated_idx_file(name, mnist_plain, tmp_path, capsys, monkeypatch):
    """Cut off mid-data. For mnist the md5 check catches it first, otherwise the header does."""
    stem = "train-labels-idx1-ubyte"
    raw = (mnist_plain / stem).read_bytes()
    root = mnist_copy(tmp_path / "data", mnist_plain, {stem: raw[:-1000]})
    code, err = run_inprocess([f"data.name={name}", f"data.root={root}"], tmp_path / "run",
                              capsys, monkeypatch)
    expected = "checksum mismatch" if name == "mnist" else "truncated"
    assert_one_clear_error(code, err, str(root / stem), expected)
    assert_no_result(tmp_path / "run")


def test_corrupted_idx_file_fails_checksum(mnist_plain, tmp_path, capsys, monkeypatch):
    """One flipped pixel byte in a copy of the bundled training images."""
    stem = "train-images-idx3-ubyte"
    raw = bytearray((mnist_plain / stem).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    root = mnist_copy(tmp_path / "data", mnist_plain, {stem: bytes(raw)})
    code, err = run_inprocess([f"data.root={root}"], tmp_path / "run", capsys, monkeypatch)
    assert_one_clear_error(code, err, "checksum mismatch", str(root / stem),
                           IDX_MD5["mnist"][stem], "data.verify=false")
    assert_no_result(tmp_path / "run")


def test_corrupted_gz_stream(tmp_path, capsys, monkeypatch):
    stem = "train-images-idx3-ubyte"
    raw = bytearray((BUNDLED_MNIST / f"{stem}.gz").read_bytes())
    raw[100] ^= 0xFF  # inside the deflate stream: zlib fails before the CRC is checked
    root = mnist_copy(tmp_path / "data", BUNDLED_MNIST, {stem: bytes(raw)}, gz=True)
    code, err = run_inprocess([f"data.root={root}"], tmp_path / "run", capsys, monkeypatch)
    assert_one_clear_error(code, err, str(root / f"{stem}.gz"))
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("how", ["name=other", "verify=false"])
def test_wrong_magic_number(how, tmp_path, capsys, monkeypatch):
    """A labels file where the images belong. data.verify=true checks the md5 of mnist's files
    first, so the magic check is reached with another name or verify=false."""
    root = write_idx_set(tmp_path / "data")
    labels = np.zeros(64, dtype=np.uint8)
    (root / "train-images-idx3-ubyte").write_bytes(idx_bytes(LABELS_MAGIC, labels))
    extra = SYNTHETIC if how == "name=other" else [
        "data.name=mnist", "data.verify=false", *SYNTHETIC[1:]]
    code, err = run_inprocess([*extra, f"data.root={root}"], tmp_path / "run", capsys,
                              monkeypatch)
    assert_one_clear_error(code, err, str(root / "train-images-idx3-ubyte"),
                           f"magic number {LABELS_MAGIC}", f"expected {IMAGES_MAGIC}")
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("declared, problem", [(70, "truncated"), (50, "trailing data")])
def test_idx_header_size_mismatch(declared, problem, tmp_path, capsys, monkeypatch):
    """The header declares `declared` images, the file holds 64."""
    root = write_idx_set(tmp_path / "data")
    path = root / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[4:8] = struct.pack(">i", declared)
    path.write_bytes(bytes(raw))
    code, err = run_inprocess([*SYNTHETIC, f"data.root={root}"], tmp_path / "run", capsys,
                              monkeypatch)
    assert_one_clear_error(code, err, str(path), f"({declared}, 28, 28)", problem)
    assert_no_result(tmp_path / "run")


def test_idx_labels_out_of_range(tmp_path, capsys, monkeypatch):
    root = write_idx_set(tmp_path / "data")
    labels = np.arange(64, dtype=np.uint8) % 11  # 10 appears
    (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(LABELS_MAGIC, labels))
    code, err = run_inprocess([*SYNTHETIC, f"data.root={root}"], tmp_path / "run", capsys,
                              monkeypatch)
    assert_one_clear_error(code, err, "labels must lie in 0-9", "found 10")
    assert_no_result(tmp_path / "run")


def test_idx_image_label_count_mismatch(tmp_path, capsys, monkeypatch):
    root = write_idx_set(tmp_path / "data")
    labels = np.arange(60, dtype=np.uint8) % 10
    (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(LABELS_MAGIC, labels))
    code, err = run_inprocess([*SYNTHETIC, f"data.root={root}"], tmp_path / "run", capsys,
                              monkeypatch)
    assert_one_clear_error(code, err, "64 images but 60 labels")
    assert_no_result(tmp_path / "run")


# --- npy arrays -----------------------------------------------------------------------------

NPY = ["data=npy", "data.train_size=null", "data.val_size=8", "data.test_size=null"]


def write_npy(root: Path, x=None, y=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(64, 28, 28), dtype=np.uint8) if x is None else x
    y = (np.arange(len(x)) % 10).astype(np.int64) if y is None else y
    np.save(root / "x_train.npy", x)
    np.save(root / "y_train_label.npy", y)
    return root


@pytest.mark.parametrize("what, x, y, needles", [
    ("flat images", np.zeros((64, 784), np.uint8), None,
     ["x_train.npy", "(N, H, W)", "(64, 784)"]),
    ("channel axis", np.zeros((64, 28, 28, 1), np.uint8), None,
     ["x_train.npy", "(N, H, W)", "(64, 28, 28, 1)"]),
    ("float images", np.zeros((64, 28, 28), np.float32), None,
     ["x_train.npy", "uint8", "float32"]),
    ("2-D labels", None, np.zeros((64, 1), np.int64), ["y_train_label.npy", "shape (N,)"]),
    ("float labels", None, np.zeros(64, np.float32), ["y_train_label.npy", "integer labels"]),
    ("label 10", None, np.arange(64) % 11, ["y_train_label.npy", "0-9", "0..10"]),
    ("label -1", None, np.arange(64) % 10 - 1, ["y_train_label.npy", "0-9", "-1..8"]),
    ("count mismatch", None, np.arange(60) % 10, ["64 images but 60 labels"]),
])
def test_bad_npy_arrays(what, x, y, needles, tmp_path, capsys, monkeypatch):
    root = write_npy(tmp_path / "data", x, y)
    code, err = run_inprocess([*NPY, f"data.root={root}"], tmp_path / "run", capsys,
                              monkeypatch)
    assert_one_clear_error(code, err, *needles)
    assert_no_result(tmp_path / "run")


def test_missing_npy_labels(tmp_path, capsys, monkeypatch):
    root = write_npy(tmp_path / "data")
    (root / "y_train_label.npy").unlink()
    code, err = run_inprocess([*NPY, f"data.root={root}"], tmp_path / "run", capsys,
                              monkeypatch)
    assert_one_clear_error(code, err, "missing data file", str(root / "y_train_label.npy"))
    assert_no_result(tmp_path / "run")


def test_truncated_npy(tmp_path, capsys, monkeypatch):
    root = write_npy(tmp_path / "data")
    path = root / "x_train.npy"
    path.write_bytes(path.read_bytes()[:5000])
    code, err = run_inprocess([*NPY, f"data.root={root}"], tmp_path / "run", capsys,
                              monkeypatch)
    assert_one_clear_error(code, err, str(path))
    assert_no_result(tmp_path / "run")


def test_empty_npy_file(tmp_path, capsys, monkeypatch):
    root = write_npy(tmp_path / "data")
    (root / "x_train.npy").write_bytes(b"")
    code, err = run_inprocess([*NPY, f"data.root={root}"], tmp_path / "run", capsys,
                              monkeypatch)
    assert_one_clear_error(code, err, str(root / "x_train.npy"))
    assert_no_result(tmp_path / "run")


# --- output dir, device ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def output_under_file_cli(tmp_path_factory):
    """`python -m convexp hydra.run.dir=<a regular file>/run` (root ignores permissions, so a
    path under a file is the unwritable dir here)."""
    tmp = tmp_path_factory.mktemp("unwritable")
    (tmp / "afile").write_text("not a folder\n")
    cmd = [sys.executable, "-m", "convexp", *SMALL, f"hydra.run.dir={tmp / 'afile' / 'run'}"]
    proc = subprocess.run(cmd, cwd=tmp, env=cli_env(tmp), capture_output=True, text=True,
                          timeout=300)
    return tmp, proc


def test_output_dir_not_writable_cli(output_under_file_cli):
    tmp, proc = output_under_file_cli
    assert proc.returncode != 0
    assert str(tmp / "afile" / "run") in proc.stdout + proc.stderr
    assert (tmp / "afile").read_text() == "not a folder\n"
    assert not list(tmp.rglob("summary.json")) and not list(tmp.rglob("*.pt"))


def test_output_dir_not_writable_cli_message(output_under_file_cli):
    tmp, proc = output_under_file_cli
    assert "Traceback" not in proc.stderr, proc.stderr
    assert_one_clear_error(proc.returncode, proc.stderr, str(tmp / "afile" / "run"),
                           "not writable")


def test_output_dir_not_writable_inprocess(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("not a folder\n")
    out = tmp_path / "afile" / "run"
    code, err = run_inprocess([], out, capsys, monkeypatch)
    assert_one_clear_error(code, err, str(out), "not writable")
    assert (tmp_path / "afile").read_text() == "not a folder\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path, capsys, monkeypatch):
    code, err = run_inprocess(["trainer.device=cuda"], tmp_path / "run", capsys, monkeypatch)
    assert_one_clear_error(code, err, "trainer.device=cuda", "CUDA is not available",
                           "trainer.device=auto or cpu")
    assert_no_result(tmp_path / "run")


def test_resume_from_missing_checkpoint(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "no_such_run"
    code, err = run_inprocess([f"resume={missing}"], tmp_path / "run", capsys, monkeypatch)
    assert_one_clear_error(code, err, "no checkpoint at", str(missing))
    assert_no_result(tmp_path / "run")


def test_result_check_helper_detects_results(tmp_path):
    """The helpers above must be able to fail: a completed summary or a checkpoint is caught."""
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed"}))
    with pytest.raises(AssertionError):
        assert_no_result(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "failed"}))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    with pytest.raises(AssertionError):
        assert_no_result(tmp_path)
    shutil.rmtree(tmp_path / "checkpoints")
    assert_no_result(tmp_path)
