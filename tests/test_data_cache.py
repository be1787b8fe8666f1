"""Each dataset file is read and verified once per process (a basic-launcher sweep runs its jobs
in one process); every load still gets tensors of its own, and a changed file is read again."""

from __future__ import annotations

import gzip
import hashlib
import shutil

import pytest
import torch

from convexp import data
from convexp.api import compose_config
from convexp.data import BUNDLED_MNIST, IDX_FILES, load_dataset, load_idx_dataset
from convexp.errors import DataError


@pytest.fixture
def counted(monkeypatch):
    """An empty cache, and counters of file reads and md5 computations in convexp.data."""
    monkeypatch.setattr(data, "_IDX_CACHE", {})
    calls = {"read": 0, "md5": 0}
    read_bytes, md5 = data._read_bytes, hashlib.md5

    def counting_read(path):
        calls["read"] += 1
        return read_bytes(path)

    def counting_md5(*args, **kwargs):
        calls["md5"] += 1
        return md5(*args, **kwargs)

    monkeypatch.setattr(data, "_read_bytes", counting_read)
    monkeypatch.setattr(data.hashlib, "md5", counting_md5)
    return calls


def _splits(dataset):
    return [s for s in (dataset.train, dataset.val, dataset.test) if s is not None]


def test_second_load_neither_rereads_nor_rehashes_and_gives_equal_private_data(counted):
    cfg = compose_config(["data.train_size=2000", "data.val_size=500"]).data
    first = load_dataset(cfg, seed=0)
    assert counted == {"read": 4, "md5": 4}  # the four bundled files, verified
    second = load_dataset(cfg, seed=0)
    assert counted == {"read": 4, "md5": 4}
    for a, b in zip(_splits(first), _splits(second), strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    # A job that changes its tensors in place changes no other job's data.
    before = second.test.images.clone()
    first.test.images.fill_(7)
    first.train.labels.fill_(3)
    assert torch.equal(second.test.images, before)
    assert not torch.equal(first.train.labels, second.train.labels)
    third = load_dataset(cfg, seed=0)
    assert torch.equal(third.test.images, before)


def _copy_mnist(dst):
    dst.mkdir()
    for stem in IDX_FILES.values():
        shutil.copy(BUNDLED_MNIST / f"{stem}.gz", dst / f"{stem}.gz")
    return dst


def test_a_rewritten_file_is_read_and_checked_again(counted, tmp_path):
    root = _copy_mnist(tmp_path / "mnist")
    load_idx_dataset(root, "mnist", verify=True)
    reads = counted["read"]
    stem = IDX_FILES["test_labels"]
    raw = bytearray(gzip.decompress((root / f"{stem}.gz").read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # still a valid labels file, but not the official one
    (root / f"{stem}.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_idx_dataset(root, "mnist", verify=True)
    assert counted["read"] == reads + 1  # only the rewritten file
    # Unverified, the changed file loads, with its new label.
    _, test = load_idx_dataset(root, "mnist", verify=False)
    assert int(test.labels[-1]) == raw[-1]


def test_an_unverified_read_is_hashed_before_it_serves_a_verified_load(counted, tmp_path):
    root = _copy_mnist(tmp_path / "mnist")
    stem = IDX_FILES["train_labels"]
    raw = bytearray(gzip.decompress((root / f"{stem}.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    (root / f"{stem}.gz").write_bytes(gzip.compress(bytes(raw)))
    load_idx_dataset(root, "mnist", verify=False)
    assert counted == {"read": 4, "md5": 0}
    with pytest.raises(DataError, match="checksum mismatch"):
        load_idx_dataset(root, "mnist", verify=True)
    assert counted["read"] == 4  # hashed from the bytes already read
