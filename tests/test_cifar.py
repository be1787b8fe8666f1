"""Colour images: CIFAR-10 from its official binary files, colour arrays for data=npy, one
normalisation statistic per channel, horizontal flips.

The real CIFAR-10 is not on the development machines (nor downloadable there): every test
builds small files in the official binary layout (3,073-byte records: a label byte, then the
red, green and blue 32x32 planes), with data.verify=false where they are not 10,000 records,
and archives of them with tarfile. Each test takes about a second or less, but the one that
trains end to end (marked slow).
"""

from __future__ import annotations

import io
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    assert_no_result,
    assert_one_clear_error,
)

from convexp import cifar
from convexp.api import compose_config, train
from convexp.data import (
    Normalizer,
    Split,
    TrainLoader,
    epoch_flips,
    epoch_order,
    epoch_shifts,
    flip_images,
    load_dataset,
    load_npy_dataset,
    shift_images,
)
from convexp.errors import DataError
from convexp.job import JobContext
from convexp.record import INPUT_SHAPE
from convexp.task import run

N_TRAIN, N_TEST = 40, 30  # records per training file, and in the test file
FILES = (*cifar.TRAIN_FILES, cifar.TEST_FILE)
# A synthetic set is small: no subset of debug=fast's sizes, and not the official counts.
CIFAR = ["data=cifar10", "data.verify=false", "data.train_size=null", "data.val_size=20",
         "data.test_size=null"]


# --- synthetic files in the official layout -------------------------------------------------


def batch_table(n: int, seed: int) -> np.ndarray:
    """n records (n, 3073) uint8: label byte, then 3,072 pixel bytes."""
    table = np.random.default_rng(seed).integers(0, 256, size=(n, cifar.RECORD_BYTES),
                                                 dtype=np.uint8)
    table[:, 0] = (np.arange(n) + seed) % 10
    return table


def write_cifar(parent: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Path:
    """parent/cifar-10-batches-bin/ with the six files; returns that folder."""
    folder = parent / cifar.FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(FILES):
        n = n_test if name == cifar.TEST_FILE else n_train
        (folder / name).write_bytes(batch_table(n, seed).tobytes())
    (folder / "batches.meta.txt").write_text("airplane\nautomobile\n")  # as the archive has
    return folder


def write_archive(path: Path, folder: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A gzipped tar of `folder`'s files as cifar-10-batches-bin/NAME, plus `extra` members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for file in sorted(folder.iterdir()):
            tar.add(file, arcname=f"{cifar.FOLDER}/{file.name}")
    return path


def expected_arrays(n_train: int = N_TRAIN, n_test: int = N_TEST):
    """What the reader must return for write_cifar's files, decoded here by hand."""
    tables = [batch_table(n_test if name == cifar.TEST_FILE else n_train, seed)
              for seed, name in enumerate(FILES)]

    def decode(table):
        return table[:, 1:].reshape(len(table), 3, 32, 32), table[:, 0]

    train = [decode(t) for t in tables[:5]]
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
            *decode(tables[5]))


# --- reading the binary files ---------------------------------------------------------------


def test_records_are_label_then_red_green_blue_planes_row_major():
    table = batch_table(3, seed=7)
    images, labels = cifar.parse_batch(table.tobytes(), "x", verify=False)
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == table[:, 0].tolist()
    for i, c, y, x in [(0, 0, 0, 0), (1, 1, 5, 31), (2, 2, 31, 3), (2, 0, 17, 9)]:
        assert images[i, c, y, x] == table[i, 1 + c * 1024 + y * 32 + x]


def test_a_full_official_size_file_passes_verify():
    table = batch_table(cifar.RECORDS_PER_FILE, seed=1)  # 30,730,000 bytes, in memory
    images, labels = cifar.parse_batch(table.tobytes(), "data_batch_1.bin", verify=True)
    assert images.shape == (10_000, 3, 32, 32) and labels.shape == (10_000,)
    with pytest.raises(DataError, match="holds 9,999 records; the official file holds 10,000"):
        cifar.parse_batch(table[:-1].tobytes(), "data_batch_1.bin", verify=True)
    assert cifar.parse_batch(table[:-1].tobytes(), "x", verify=False)[0].shape[0] == 9_999


def test_load_dataset_reads_the_six_files_in_order(tmp_path):
    write_cifar(tmp_path)
    cfg = compose_config([*CIFAR, "data.val_size=0", f"data.root={tmp_path}"]).data
    data = load_dataset(cfg, seed=0)
    train_x, train_y, test_x, test_y = expected_arrays()
    assert data.image_shape == (3, 32, 32)
    assert torch.equal(data.train.images, torch.from_numpy(train_x))
    assert torch.equal(data.train.labels, torch.from_numpy(train_y.astype(np.int64)))
    assert torch.equal(data.test.images, torch.from_numpy(test_x))
    assert torch.equal(data.test.labels, torch.from_numpy(test_y.astype(np.int64)))
    assert data.test.images.is_contiguous() and data.train.images.is_contiguous()
    # The validation split is the usual one: seeded, carved from the training set.
    split = load_dataset(compose_config([*CIFAR, f"data.root={tmp_path}"]).data, seed=0)
    assert (len(split.train), len(split.val)) == (5 * N_TRAIN - 20, 20)


@pytest.mark.parametrize("where", ["folder", "parent", "archive", "archive's folder"])
def test_data_root_may_name_the_folder_its_parent_or_the_archive(where, tmp_path):
    folder = write_cifar(tmp_path / "extracted")
    archive = write_archive(tmp_path / "download" / cifar.ARCHIVE, folder)
    root = {"folder": folder, "parent": folder.parent, "archive": archive,
            "archive's folder": archive.parent}[where]
    cfg = compose_config([*CIFAR, "data.val_size=0", f"data.root={root}"]).data
    data = load_dataset(cfg, seed=0)
    train_x, _, test_x, _ = expected_arrays()
    assert torch.equal(data.train.images, torch.from_numpy(train_x))
    assert torch.equal(data.test.images, torch.from_numpy(test_x))


def test_the_archive_is_read_in_memory_and_only_its_expected_members(tmp_path):
    folder = write_cifar(tmp_path / "src")
    evil = {"../escaped.bin": b"x" * 10, "/tmp/convexp-absolute.bin": b"y" * 10,
            f"{cifar.FOLDER}/../../escaped2.bin": b"z" * 10}
    archive = write_archive(tmp_path / "dl" / cifar.ARCHIVE, folder, extra=evil)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    files = cifar.read_archive(archive, verify=False)
    assert sorted(files) == sorted(FILES)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/convexp-absolute.bin").exists()


def test_an_expected_member_that_is_a_link_is_refused(tmp_path):
    folder = write_cifar(tmp_path / "src")
    (folder / cifar.TEST_FILE).unlink()
    archive = tmp_path / cifar.ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        for file in sorted(folder.iterdir()):
            tar.add(file, arcname=f"{cifar.FOLDER}/{file.name}")
        link = tarfile.TarInfo(f"{cifar.FOLDER}/{cifar.TEST_FILE}")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError, match="is not a regular file"):
        cifar.read_archive(archive, verify=False)


def test_an_oversized_member_is_refused_before_it_is_read(tmp_path):
    folder = write_cifar(tmp_path / "src")
    (folder / cifar.TEST_FILE).write_bytes(bytes((cifar.RECORDS_PER_FILE + 1)
                                                 * cifar.RECORD_BYTES))
    archive = write_archive(tmp_path / cifar.ARCHIVE, folder)
    with pytest.raises(DataError, match="more than the official file's 30,730,000"):
        cifar.read_archive(archive, verify=False)


def test_each_source_is_read_once_per_process_and_again_when_it_changes(tmp_path, monkeypatch):
    folder = write_cifar(tmp_path)
    reads = []
    read_folder = cifar.read_folder
    monkeypatch.setattr(cifar, "read_folder", lambda f: reads.append(f) or read_folder(f))
    first = cifar.load(folder, verify=False)
    assert cifar.load(folder, verify=False)[0] is first[0] and len(reads) == 1
    assert not first[0].flags.writeable  # shared between jobs: nobody writes into it
    table = batch_table(N_TEST, seed=99)
    (folder / cifar.TEST_FILE).write_bytes(table.tobytes())
    assert cifar.load(folder, verify=False)[3].tolist() == table[:, 0].tolist()
    assert len(reads) == 2
    # Read without verify first: verify=true still checks the counts.
    with pytest.raises(DataError, match=f"holds {N_TRAIN} records"):
        cifar.load(folder, verify=True)


def test_an_archive_read_without_verify_is_checked_when_verify_is_asked(tmp_path):
    archive = write_archive(tmp_path / cifar.ARCHIVE, write_cifar(tmp_path / "src"))
    cifar.load(archive, verify=False)
    with pytest.raises(DataError, match="checksum mismatch"):
        cifar.load(archive, verify=True)


# --- what is refused, with one line, before training ------------------------------------------


def _truncate(folder: Path) -> str:
    path = folder / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-5])
    return "data_batch_2.bin"


def _bad_label(folder: Path) -> str:
    table = batch_table(N_TRAIN, seed=3)
    table[17, 0] = 12
    (folder / "data_batch_4.bin").write_bytes(table.tobytes())
    return "data_batch_4.bin"


def _missing(folder: Path) -> str:
    (folder / "data_batch_3.bin").unlink()
    return "data_batch_3.bin"


@pytest.mark.parametrize("spoil, needles", [
    (_truncate, ["not a whole number of 3,073-byte records", "3,068 bytes over"]),
    (_bad_label, ["record 17 has label 12", "0-9"]),
    (_missing, ["missing data file"]),
])
def test_a_malformed_file_is_named(spoil, needles, tmp_path, refused):
    folder = write_cifar(tmp_path / "data")
    name = spoil(folder)
    code, err = refused([*CIFAR, f"data.root={folder}"])
    assert_one_clear_error(code, err, str(folder / name), *needles)
    assert_no_result(tmp_path / "run")


def test_verify_wants_the_official_record_counts(tmp_path, refused):
    folder = write_cifar(tmp_path / "data")
    code, err = refused([*CIFAR, "data.verify=true", f"data.root={folder}"])
    assert_one_clear_error(code, err, "data_batch_1.bin", f"holds {N_TRAIN} records",
                           "10,000", "data.verify=false")


def test_verify_checks_the_archive_md5(tmp_path, refused):
    archive = write_archive(tmp_path / "dl" / cifar.ARCHIVE, write_cifar(tmp_path / "src"))
    code, err = refused([*CIFAR, "data.verify=true", f"data.root={archive.parent}"])
    assert_one_clear_error(code, err, "checksum mismatch", str(archive), cifar.ARCHIVE_MD5,
                           "https://www.cs.toronto.edu/~kriz/cifar.html")
    assert_no_result(tmp_path / "run")


def test_a_renamed_python_archive_is_recognised_by_its_md5(tmp_path, refused, monkeypatch):
    """The python version's archive under the binary one's name: its published md5 names it
    (here a small archive stands in, its md5 put in the python version's place)."""
    import hashlib

    archive = write_archive(tmp_path / "dl" / cifar.ARCHIVE, write_cifar(tmp_path / "src"))
    monkeypatch.setattr(cifar, "PYTHON_ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    code, err = refused([*CIFAR, "data.verify=true", f"data.root={archive.parent}"])
    assert_one_clear_error(code, err, str(archive), "a pickle is code", cifar.ARCHIVE)


PICKLE_NEEDLES = ["a pickle is code", "CIFAR-10 binary version (suitable for C programs)",
                  "cifar-10-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar.html"]


def _python_version(root: Path) -> Path:
    """The python version's layout: pickles named data_batch_1 .. test_batch, no .bin."""
    folder = root / cifar.PYTHON_FOLDER
    folder.mkdir(parents=True)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"):
        (folder / name).write_bytes(b"\x80\x04K\x00.")  # a pickle: never to be loaded
    return folder


@pytest.mark.parametrize("where", ["folder", "parent", "a batch file", "renamed folder",
                                   "archive", "renamed archive"])
def test_the_python_version_is_refused_and_the_binary_one_named(where, tmp_path, refused,
                                                                 monkeypatch):
    import pickle

    def no_unpickling(*args, **kwargs):
        raise AssertionError("convexp unpickled a dataset file")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    folder = _python_version(tmp_path / "data")
    if where == "renamed folder":
        folder = folder.rename(tmp_path / "data" / "cifar")
    if where in ("archive", "renamed archive"):
        name = cifar.PYTHON_ARCHIVE if where == "archive" else "download.tar.gz"
        archive = tmp_path / "dl" / name
        archive.parent.mkdir()
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(folder, arcname=cifar.PYTHON_FOLDER)
    root = {"folder": folder, "parent": folder.parent, "renamed folder": folder,
            "a batch file": folder / "data_batch_1"}.get(where) or archive
    code, err = refused([*CIFAR, f"data.root={root}"])
    assert_one_clear_error(code, err, *PICKLE_NEEDLES)
    assert_no_result(tmp_path / "run")


@pytest.mark.parametrize("what, needles", [
    ("nothing there", ["does not exist"]),
    ("an empty folder", ["holds no CIFAR-10 binary files", "cifar-10-batches-bin"]),
    ("an archive of something else", ["has no member cifar-10-batches-bin/data_batch_1.bin"]),
    ("not an archive", ["cannot read"]),
])
def test_a_root_without_cifar_names_what_it_wants(what, needles, tmp_path, refused):
    root = tmp_path / "data"
    if what == "an empty folder":
        root.mkdir()
    elif what == "an archive of something else":
        (tmp_path / "x.txt").write_text("hello")
        root = tmp_path / cifar.ARCHIVE
        with tarfile.open(root, "w:gz") as tar:
            tar.add(tmp_path / "x.txt", arcname="x.txt")
    elif what == "not an archive":
        root = tmp_path / cifar.ARCHIVE
        root.write_bytes(b"not gzip at all" * 100)
    code, err = refused([*CIFAR, f"data.root={root}"])
    assert_one_clear_error(code, err, str(root), *needles)


# --- colour npy arrays --------------------------------------------------------------------------


def _save_npy(root: Path, x: np.ndarray, y: np.ndarray) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "x_train.npy", x)
    np.save(root / "y_train_label.npy", y)
    return root


@pytest.mark.parametrize("channels", [1, 3])
def test_npy_takes_nhwc_and_nchw_alike(channels, tmp_path):
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, size=(12, channels, 8, 10), dtype=np.uint8)
    y = np.arange(12) % 10
    layouts = {"NCHW": nchw, "NHWC": nchw.transpose(0, 2, 3, 1),
               "float NHWC": nchw.transpose(0, 2, 3, 1).astype(np.float32) / 255}
    if channels == 1:
        layouts["NHW"] = nchw[:, 0]
    for name, x in layouts.items():
        train, test = load_npy_dataset(_save_npy(tmp_path / name, x, y))
        assert test is None
        assert train.images.shape == (12, channels, 8, 10), name
        assert torch.equal(train.images, torch.from_numpy(nchw)), name
        assert train.images.is_contiguous(), name  # a private (N, C, H, W) copy


@pytest.mark.parametrize("shape, needles", [
    ((6, 3, 8, 3), ["(6, 3, 8, 3)", "ambiguous"]),
    ((6, 1, 8, 1), ["(6, 1, 8, 1)", "ambiguous"]),
    ((6, 8, 8, 4), ["(6, 8, 8, 4)", "C = 1 or 3"]),
    ((6, 2, 8, 8), ["(6, 2, 8, 8)", "C = 1 or 3"]),
    ((6, 1, 8, 8, 1), ["5-D", "(N, H, W, C)"]),
])
def test_npy_shapes_that_name_no_channel_axis_are_refused(shape, needles, tmp_path, refused):
    root = _save_npy(tmp_path / "data", np.zeros(shape, np.uint8), np.arange(6) % 10)
    code, err = refused(["data=npy", f"data.root={root}", "data.train_size=null",
                         "data.val_size=2", "data.test_size=null"])
    assert_one_clear_error(code, err, str(root / "x_train.npy"), *needles)


# --- normalisation per channel ----------------------------------------------------------------


def test_normalizer_applies_each_channels_statistics():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    mean, std = [0.5, 0.2, 0.0], [0.5, 0.1, 2.0]
    out = Normalizer(compose_config(["data=cifar10", f"data.normalize.mean={mean}",
                                     f"data.normalize.std={std}"]).data.normalize)(images)
    expected = [(0 - 0.5) / 0.5, (0.2 - 0.2) / 0.1, (1.0 - 0.0) / 2.0]
    for c in range(3):
        assert torch.allclose(out[:, c], torch.full((2, 2, 2), expected[c]), atol=1e-6)
    # One number for all channels is the same as a list of three equal ones.
    one = Normalizer(compose_config(["data.normalize.mean=0.3", "data.normalize.std=0.2"])
                     .data.normalize)(images)
    three = Normalizer(compose_config(["data.normalize.mean=[0.3,0.3,0.3]",
                                       "data.normalize.std=[0.2,0.2,0.2]"]).data.normalize)(images)
    assert torch.allclose(one, three)


@pytest.mark.parametrize("overrides, needles", [
    (["data.normalize.mean=[0.5,0.5]"], ["data.normalize.mean=[0.5, 0.5]", "2 entries",
                                         "3 channels"]),
    (["data.normalize.std=[0.2,0.2,0.2,0.2]"], ["data.normalize.std", "4 entries",
                                                "3 channels"]),
])
def test_a_statistic_per_channel_must_match_the_channels(overrides, needles, tmp_path,
                                                         refused):
    folder = write_cifar(tmp_path / "data")
    code, err = refused([*CIFAR, f"data.root={folder}", *overrides])
    assert_one_clear_error(code, err, *needles)


def test_greyscale_images_take_one_statistic_or_a_list_of_one(tmp_path, refused):
    code, err = refused(["data.normalize.mean=[0.1,0.1,0.1]"])  # MNIST: one channel
    assert_one_clear_error(code, err, "data.normalize.mean", "3 entries", "1 channel:")


@pytest.mark.parametrize("override, needle", [
    ("data.normalize.std=[0.2,0,0.2]", "data.normalize.std=[0.2, 0, 0.2] must be > 0"),
    ("data.normalize.mean=[]", "data.normalize.mean=[] must be finite"),
    ("data.normalize.mean=abc", "data.normalize.mean='abc' must be finite"),
])
def test_statistics_are_numbers(override, needle, tmp_path, refused):
    code, err = refused([override])
    assert_one_clear_error(code, err, needle)


# --- horizontal flips -------------------------------------------------------------------------


def test_flip_defaults_per_dataset():
    assert compose_config(["data=cifar10"]).data.random_flip is True
    for name in ("mnist", "fashion_mnist", "kmnist", "npy"):
        assert compose_config([f"data={name}"]).data.random_flip is False, name


def test_epoch_flips_are_seeded_and_flip_images_mirrors():
    cpu = torch.device("cpu")
    a = epoch_flips(4000, seed=0, epoch=0, device=cpu)
    assert torch.equal(a, epoch_flips(4000, seed=0, epoch=0, device=cpu))
    assert not torch.equal(a, epoch_flips(4000, seed=0, epoch=1, device=cpu))
    assert not torch.equal(a, epoch_flips(4000, seed=1, epoch=0, device=cpu))
    assert a.dtype == torch.bool and 0.45 < a.float().mean().item() < 0.55
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.uint8).view(2, 3, 2, 4)
    out = flip_images(images, torch.tensor([True, False]))
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])


def _loader(flip: bool, shift: int) -> TrainLoader:
    images = torch.from_numpy(batch_table(96, seed=5)[:, 1:].reshape(96, 3, 32, 32).copy())
    cfg = compose_config(["data=cifar10", "data.batch_size=16",
                          f"data.random_flip={str(flip).lower()}",
                          f"data.random_shift={shift}"]).data
    return TrainLoader(Split(images, torch.arange(96) % 10), cfg, seed=3, drop_last=True)


def test_a_resumed_epoch_replays_the_same_flips_and_shifts():
    loader = _loader(flip=True, shift=2)
    whole = list(loader.epoch(4))
    resumed = list(loader.epoch(4, start=2))  # a run resumed after its 2nd batch
    assert len(resumed) == len(whole) - 2
    for (x, y), (x2, y2) in zip(whole[2:], resumed, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    # What the batches are: the epoch's order, flipped, then shifted (per channel alike).
    cpu, n, bs = torch.device("cpu"), 96, 16
    order, flips = epoch_order(n, 3, 4, cpu), epoch_flips(n, 3, 4, cpu)
    shifts = epoch_shifts(n, 2, 3, 4, cpu)
    idx = order[bs : 2 * bs]
    expected = shift_images(flip_images(loader.split.images[idx], flips[bs : 2 * bs]),
                            shifts[bs : 2 * bs], 2)
    assert torch.equal(whole[1][0], expected)


def test_flips_leave_the_order_and_shifts_of_a_run_without_them():
    with_flips, without = _loader(flip=True, shift=1), _loader(flip=False, shift=1)
    flips = epoch_flips(96, 3, 0, torch.device("cpu"))
    for i, ((x, y), (x0, y0)) in enumerate(zip(with_flips.epoch(0), without.epoch(0),
                                               strict=True)):
        assert torch.equal(y, y0)
        # The images left unflipped are exactly the flip-free run's.
        keep = ~flips[i * 16 : (i + 1) * 16]
        assert torch.equal(x[keep], x0[keep])


# --- end to end -------------------------------------------------------------------------------


@pytest.mark.slow  # about 8 s on 2 busy cores: the run, its ERF and latency analysis
def test_training_on_synthetic_cifar_records_the_input_shape(tmp_path):
    folder = write_cifar(tmp_path / "data")
    result = train(["experiment=cifar10", "logger=none", "trainer.progress=false",
                    "data.verify=false", f"data.root={folder.parent}", "data.val_size=20",
                    "data.batch_size=32", "trainer.max_epochs=1", "model.channels=[8,16]"],
                   tmp_path / "run")
    assert result["status"] == "completed", result.get("reason")
    assert result[INPUT_SHAPE] == [3, 32, 32]
    assert result["steps"] == (5 * N_TRAIN - 20) // 32 and 0 <= result["test_acc"] <= 1
    assert math.isfinite(result["final_train_loss"])
    assert result.model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_summary_mode_shows_the_datasets_input_shape(capsys):
    # No data needed: CIFAR-10's shape is known, data.root is never read.
    run(compose_config(["experiment=cifar10", "data.root=/nonexistent", "mode=summary",
                        "model=depthwise_separable"]), JobContext())
    out = capsys.readouterr().out
    assert "input 3x32x32" in out and "(3, 32, 32)" in out


def test_summary_mode_reads_an_npy_arrays_shape_from_its_header(tmp_path, capsys):
    root = _save_npy(tmp_path / "data", np.zeros((5, 32, 32, 3), np.uint8), np.arange(5))
    run(compose_config(["data=npy", f"data.root={root}", "mode=summary", "model=book_cnn"]),
        JobContext())
    out = capsys.readouterr().out
    assert "input 3x32x32" in out and "(3, 32, 32)" in out


def test_every_model_file_composes_with_the_cifar_recipe():
    for path in sorted((Path(__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml")):
        cfg = compose_config(["experiment=cifar10", f"model={path.stem}"])
        assert cfg.data.name == "cifar10" and cfg.trainer.max_epochs == 10, path.stem
