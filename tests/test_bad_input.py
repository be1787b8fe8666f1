"""Bad input: every case exits non-zero before any training starts, prints one clear
message naming the field or file and what was expected, and leaves nothing behind that looks
like a complete result (no summary.json with status completed, no checkpoint, no metrics).

Most cases run in-process (conftest.run_job_until_exit: `compose_config` + `convexp.task.run`,
which raises SystemExit(2) after printing "convexp: error: ..."). Hydra composition errors
(unknown group option, unknown key, wrong type) happen before convexp's code runs: they are
checked through the exception `compose_config` raises here, and as a user sees them (one
"convexp: error:" line, exit 2) in test_cli.py, with a few of the job's own checks.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    FAST_RUN,
    assert_no_result,
    assert_one_clear_error,
    cli_command,
    cli_env,
    error_chain,
    read_summary,
    run_job_for_objective,
    run_job_until_exit,
)

from convexp.api import compose_config
from convexp.data import BUNDLED_MNIST, IDX_FILES, IDX_MD5, IMAGES_MAGIC, LABELS_MAGIC
from convexp.errors import ConfigError

# --- helpers --------------------------------------------------------------------------------


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(f">i{array.ndim}i", magic, *array.shape) + array.tobytes()


def write_idx_set(root: Path, n_train: int = 64, n_test: int = 32) -> Path:
    """A small, valid IDX dataset (not MNIST: use it with data=fashion_mnist, whose files
    have no known checksums)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        (root / IDX_FILES[f"{part}_images"]).write_bytes(idx_bytes(IMAGES_MAGIC, images))
        (root / IDX_FILES[f"{part}_labels"]).write_bytes(idx_bytes(LABELS_MAGIC, labels))
    return root


# A synthetic IDX set needs its own sizes (debug=fast asks for 2,000 training images).
SIZES = ["data.train_size=null", "data.val_size=8", "data.test_size=null"]
SYNTHETIC = ["data=fashion_mnist", *SIZES]


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


@pytest.mark.parametrize("group", ["optimizer", "scheduler", "data", "logger"])
def test_unknown_group_option(group):
    with pytest.raises(ConfigError) as exc:
        compose_config([f"{group}=nope"])
    message = error_chain(exc.value)
    assert f"{group}/nope" in message and "Available options" in message, message


@pytest.mark.parametrize("field, registered", [
    ("model.name", "standard"), ("optimizer.name", "adamw"), ("scheduler.name", "onecycle"),
    ("data.name", "fashion_mnist"), ("logger.name", "wandb"),
])
def test_unknown_name_field(field, registered, tmp_path, refused):
    code, err = refused([f"{field}=nope"])
    # Names the field and the bad value, and lists what is available.
    assert_one_clear_error(code, err, field, "nope", registered)
    assert_no_result(tmp_path / "run")


# --- unknown keys, wrong types --------------------------------------------------------------


@pytest.mark.parametrize("override, key", [
    ("trainer.max_epoch=2", "trainer.max_epoch"),
    ("optimiser.lr=0.1", "optimiser.lr"),
    ("data.batchsize=64", "data.batchsize"),
])
def test_unknown_key(override, key):
    with pytest.raises(ConfigError) as exc:
        compose_config([override])
    assert key in error_chain(exc.value)


@pytest.mark.parametrize("override, expected", [
    ("+model.kernel_sise=5", ("model.kernel_sise", "does not apply to model=standard",
                              "ConvNetConfig")),
    # trainer has one schema, no options: `+trainer.max_epoch=10` would train the default 3.
    ("+trainer.max_epoch=10", ("trainer.max_epoch: nothing reads it", "max_epochs")),
])
def test_unknown_key_appended_with_plus(tmp_path, refused, override, expected):
    """`+key=value` appends past the schema at composition; the job then refuses it before
    any work, naming the key and the option it does not apply to."""
    cfg = compose_config([*FAST_RUN, override])
    group, key = override[1:].split("=")[0].split(".")
    assert cfg[group][key] is not None
    code, err = refused([override])
    assert_one_clear_error(code, err, *expected)
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("override, key, expected", [
    ("optimizer.lr=fast", "optimizer.lr", "Float"),
    ("model.kernel_size=3.5", "model.kernel_size", "Integer"),
    ("model.channels=32", "model.channels", "ListConfig"),
    ("model.padding=circular", "model.padding", "same"),  # the valid values are listed
    ("data.shuffle=maybe", "data.shuffle", "not a valid bool"),
    ("trainer.device=tpu", "trainer.device", "cuda"),
    ("trainer.compile=auto", "trainer.compile", "not a valid bool"),  # null is auto now
    ("trainer.precision=fp16", "trainer.precision", "bf16"),
    ("data.normalize=false", "data.normalize", "Normalize"),  # data.normalize=null now
    ("seed=abc", "seed", "Integer"),
])
def test_wrong_type(override, key, expected):
    with pytest.raises(ConfigError) as exc:
        compose_config([override])
    message = error_chain(exc.value)
    assert key in message and expected in message, message


# --- out-of-range values --------------------------------------------------------------------


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
def test_out_of_range(override, field, rule, tmp_path, refused):
    code, err = refused([override])
    assert_one_clear_error(code, err, field, rule)
    assert_no_result(tmp_path / "run")


def test_infinite_lr(tmp_path, refused):
    code, err = refused(["optimizer.lr=inf"])
    assert_one_clear_error(code, err, "optimizer.lr")
    assert_no_result(tmp_path / "run")


def test_batch_size_larger_than_training_set(tmp_path, refused):
    code, err = refused(["data.train_size=2000", "data.batch_size=4096"])
    assert_one_clear_error(code, err, "data.batch_size")
    assert_no_result(tmp_path / "run")


def test_four_step_onecycle(tmp_path):
    """A valid config: 4 steps under the default onecycle schedule train (the schedule keeps
    a warm-up of at least 2 steps) and complete."""
    objective = run_job_for_objective([*FAST_RUN, "trainer.max_steps=4"], tmp_path / "run")
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "completed", summary
    assert summary["steps"] == 4 and summary["epochs_completed"] == 1
    assert objective == summary["best_val_acc"]


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
def test_hyperparameter_ranges(override, field, tmp_path, refused):
    code, err = refused([override])
    assert_one_clear_error(code, err, field)
    assert_no_result(tmp_path / "run")


def test_nesterov_without_momentum(tmp_path, refused):
    code, err = refused(["optimizer=sgd", "optimizer.momentum=0"])
    assert_one_clear_error(code, err, "optimizer.nesterov", "optimizer.momentum")
    assert_no_result(tmp_path / "run")


def test_feature_map_collapse(tmp_path, refused):
    code, err = refused(["model.padding=valid", "model.kernel_size=7", "model.dilation=4"])
    assert_one_clear_error(code, err, "collapses the feature map", "kernel_size=7",
                           "dilation=4")
    assert_no_result(tmp_path / "run")


def test_too_many_stages_for_the_image(tmp_path):
    """Five pooled stages shrink 28x28 to 1x1 (28 -> 14 -> 7 -> 3 -> 1 -> 1, never pooled
    below 1x1): the model builds (BatchNorm on a batch of 1x1 maps is fine in training) and
    trains. (It used to crash in the classifier-width dry run: BatchNorm in training mode on
    one image.)"""
    overrides = [*FAST_RUN, "model.channels=[8,8,8,8,8]", "trainer.max_steps=1"]
    run_job_for_objective(overrides, tmp_path / "run")
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "completed", summary
    assert summary["steps"] == 1 and summary["test_acc"] is not None


@pytest.mark.parametrize("overrides, needles", [
    (["data.val_size=60000"], ["data.val_size=60000", "the training set has 60000 images"]),
    (["data.val_size=100000"], ["data.val_size=100000", "[0, 59999]"]),
    (["data.val_size=5000", "data.train_size=56000"], ["data.train_size=56000", "[1, 55000]"]),
])
def test_val_size_larger_than_training_set(overrides, needles, tmp_path, refused):
    code, err = refused(overrides)
    assert_one_clear_error(code, err, *needles)
    assert_no_result(tmp_path / "run")


# --- IDX files ------------------------------------------------------------------------------


def test_data_root_not_a_folder(tmp_path, refused):
    missing = tmp_path / "nowhere"
    code, err = refused([f"data.root={missing}"])
    assert_one_clear_error(code, err, f"data.root={missing}", "is not a folder")
    assert_no_result(tmp_path / "run")


def test_missing_idx_file(tmp_path, refused):
    root = write_idx_set(tmp_path / "data")
    (root / "t10k-labels-idx1-ubyte").unlink()
    code, err = refused([*SYNTHETIC, f"data.root={root}"])
    assert_one_clear_error(code, err, "missing data file", str(root / "t10k-labels-idx1-ubyte"))
    assert_no_result(tmp_path / "run")


def test_truncated_gz_file(tmp_path, refused):
    stem = "train-images-idx3-ubyte"
    whole = (BUNDLED_MNIST / f"{stem}.gz").read_bytes()
    root = mnist_copy(tmp_path / "data", BUNDLED_MNIST, {stem: whole[: len(whole) // 2]}, gz=True)
    code, err = refused([f"data.root={root}"])
    assert_one_clear_error(code, err, str(root / f"{stem}.gz"), "truncated")
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_truncated_idx_file(name, mnist_plain, tmp_path, refused):
    """Cut off mid-data. For mnist the md5 check catches it first; for a dataset without
    known checksums (the same files as data=fashion_mnist) the header does."""
    stem = "train-labels-idx1-ubyte"
    raw = (mnist_plain / stem).read_bytes()
    root = mnist_copy(tmp_path / "data", mnist_plain, {stem: raw[:-1000]})
    code, err = refused([f"data={name}", f"data.root={root}"])
    expected = "checksum mismatch" if name == "mnist" else "truncated"
    assert_one_clear_error(code, err, str(root / stem), expected)
    assert_no_result(tmp_path / "run")


def test_corrupted_idx_file_fails_checksum(mnist_plain, tmp_path, refused):
    """One flipped pixel byte in a copy of the bundled training images."""
    stem = "train-images-idx3-ubyte"
    raw = bytearray((mnist_plain / stem).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    root = mnist_copy(tmp_path / "data", mnist_plain, {stem: bytes(raw)})
    code, err = refused([f"data.root={root}"])
    assert_one_clear_error(code, err, "checksum mismatch", str(root / stem),
                           IDX_MD5["mnist"][stem], "data.verify=false")
    assert_no_result(tmp_path / "run")


def test_corrupted_gz_stream(tmp_path, refused):
    stem = "train-images-idx3-ubyte"
    raw = bytearray((BUNDLED_MNIST / f"{stem}.gz").read_bytes())
    raw[100] ^= 0xFF  # inside the deflate stream: zlib fails before the CRC is checked
    root = mnist_copy(tmp_path / "data", BUNDLED_MNIST, {stem: bytes(raw)}, gz=True)
    code, err = refused([f"data.root={root}"])
    assert_one_clear_error(code, err, str(root / f"{stem}.gz"))
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("how", ["fashion_mnist", "verify=false"])
def test_wrong_magic_number(how, tmp_path, refused):
    """A labels file where the images belong. data.verify=true checks the md5 of mnist's files
    first, so the magic check is reached with a dataset without known checksums or with
    data.verify=false."""
    root = write_idx_set(tmp_path / "data")
    labels = np.zeros(64, dtype=np.uint8)
    (root / "train-images-idx3-ubyte").write_bytes(idx_bytes(LABELS_MAGIC, labels))
    extra = SYNTHETIC if how == "fashion_mnist" else ["data=mnist", "data.verify=false", *SIZES]
    code, err = refused([*extra, f"data.root={root}"])
    assert_one_clear_error(code, err, str(root / "train-images-idx3-ubyte"),
                           f"magic number {LABELS_MAGIC}", f"expected {IMAGES_MAGIC}")
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("declared, problem", [(70, "truncated"), (50, "trailing data")])
def test_idx_header_size_mismatch(declared, problem, tmp_path, refused):
    """The header declares `declared` images, the file holds 64."""
    root = write_idx_set(tmp_path / "data")
    path = root / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[4:8] = struct.pack(">i", declared)
    path.write_bytes(bytes(raw))
    code, err = refused([*SYNTHETIC, f"data.root={root}"])
    assert_one_clear_error(code, err, str(path), f"({declared}, 28, 28)", problem)
    assert_no_result(tmp_path / "run")


def test_idx_labels_out_of_range(tmp_path, refused):
    root = write_idx_set(tmp_path / "data")
    labels = np.arange(64, dtype=np.uint8) % 11  # 10 appears
    (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(LABELS_MAGIC, labels))
    code, err = refused([*SYNTHETIC, f"data.root={root}"])
    assert_one_clear_error(code, err, "labels must lie in 0-9", "found 10")
    assert_no_result(tmp_path / "run")


def test_idx_image_label_count_mismatch(tmp_path, refused):
    root = write_idx_set(tmp_path / "data")
    labels = np.arange(60, dtype=np.uint8) % 10
    (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(LABELS_MAGIC, labels))
    code, err = refused([*SYNTHETIC, f"data.root={root}"])
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
    ("four channels", np.zeros((64, 28, 28, 4), np.uint8), None,
     ["x_train.npy", "(N, H, W)", "(64, 28, 28, 4)"]),
    # Float images are taken only as uint8 pixels / 255 (exactly k/255 in [0, 1]).
    ("float images, not pixels / 255", np.full((64, 28, 28), 0.5, np.float32), None,
     ["x_train.npy", "float images must be uint8 pixels / 255", "0.5..0.5"]),
    ("float images in 0-255", np.full((64, 28, 28), 200.0, np.float32), None,
     ["x_train.npy", "float images must be uint8 pixels / 255", "200..200"]),
    ("int16 images", np.zeros((64, 28, 28), np.int16), None,
     ["x_train.npy", "uint8", "int16"]),
    ("NaN pixels", np.where(np.arange(64 * 28 * 28).reshape(64, 28, 28) % 100 == 0, np.nan,
                            0.0).astype(np.float32), None,
     ["x_train.npy", f"{len(range(0, 64 * 28 * 28, 100))} NaN"]),
    ("empty array", np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64),
     ["x_train.npy", "empty", "(0, 28, 28)"]),
    ("empty float array", np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64),
     ["x_train.npy", "empty"]),
    ("2-D labels", None, np.zeros((64, 1), np.int64), ["y_train_label.npy", "shape (N,)"]),
    ("float labels", None, np.zeros(64, np.float32), ["y_train_label.npy", "integer labels"]),
    ("label 10", None, np.arange(64) % 11, ["y_train_label.npy", "0-9", "0..10"]),
    ("label -1", None, np.arange(64) % 10 - 1, ["y_train_label.npy", "0-9", "-1..8"]),
    ("count mismatch", None, np.arange(60) % 10, ["64 images but 60 labels"]),
])
def test_bad_npy_arrays(what, x, y, needles, tmp_path, refused):
    root = write_npy(tmp_path / "data", x, y)
    code, err = refused([*NPY, f"data.root={root}"])
    assert_one_clear_error(code, err, *needles)
    assert_no_result(tmp_path / "run")


def test_missing_npy_labels(tmp_path, refused):
    root = write_npy(tmp_path / "data")
    (root / "y_train_label.npy").unlink()
    code, err = refused([*NPY, f"data.root={root}"])
    assert_one_clear_error(code, err, "missing data file", str(root / "y_train_label.npy"))
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("present, absent", [("x_test.npy", "y_test_label.npy"),
                                             ("y_test_label.npy", "x_test.npy")])
def test_half_a_test_pair_is_refused(present, absent, tmp_path, refused):
    root = write_npy(tmp_path / "data")
    arrays = {"x_test.npy": np.zeros((16, 28, 28), np.uint8),
              "y_test_label.npy": np.arange(16) % 10}
    np.save(root / present, arrays[present])
    code, err = refused([*NPY, f"data.root={root}"])
    assert_one_clear_error(code, err, str(root / present), absent)
    assert_no_result(tmp_path / "run")


def test_truncated_npy(tmp_path, refused):
    root = write_npy(tmp_path / "data")
    path = root / "x_train.npy"
    path.write_bytes(path.read_bytes()[:5000])
    code, err = refused([*NPY, f"data.root={root}"])
    assert_one_clear_error(code, err, str(path))
    assert_no_result(tmp_path / "run")


def test_empty_npy_file(tmp_path, refused):
    root = write_npy(tmp_path / "data")
    (root / "x_train.npy").write_bytes(b"")
    code, err = refused([*NPY, f"data.root={root}"])
    assert_one_clear_error(code, err, str(root / "x_train.npy"))
    assert_no_result(tmp_path / "run")


# --- output dir, device ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def output_under_file_cli(tmp_path_factory):
    """`python -m convexp hydra.run.dir=<a regular file>/run` (root ignores permissions, so a
    path under a file is the unwritable dir here)."""
    tmp = tmp_path_factory.mktemp("unwritable")
    (tmp / "afile").write_text("not a folder\n")
    cmd = cli_command([*FAST_RUN, f"hydra.run.dir={tmp / 'afile' / 'run'}"], tmp,
                      run_dir=False)
    proc = subprocess.run(cmd, cwd=tmp, env=cli_env(tmp), capture_output=True, text=True,
                          timeout=1500)
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
    code, err = run_job_until_exit([], out, capsys, forbid_training=monkeypatch)
    assert_one_clear_error(code, err, str(out), "not writable")
    assert (tmp_path / "afile").read_text() == "not a folder\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path, refused):
    code, err = refused(["trainer.device=cuda"])
    assert_one_clear_error(code, err, "trainer.device=cuda", "CUDA is not available",
                           "trainer.device=auto or cpu")
    assert_no_result(tmp_path / "run")


def test_resume_from_missing_checkpoint(tmp_path, refused):
    missing = tmp_path / "no_such_run"
    code, err = refused([f"resume={missing}"])
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


@pytest.mark.parametrize("mode", ["train", "summary"])
def test_a_required_field_left_unset_is_one_line(refused, mode):
    """`root: ???` (the datasets without a bundled copy): one line naming the field, not
    Hydra's "Error executing job with overrides" above OmegaConf's message."""
    code, err = refused(["data=fashion_mnist", f"mode={mode}"])
    assert_one_clear_error(code, err, "data.root", "must be set")
