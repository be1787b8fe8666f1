"""CIFAR-10 from its official binary distribution, read and checked with numpy alone (no torch).

The binary version ("CIFAR-10 binary version (suitable for C programs)", cifar-10-binary.tar.gz
from https://www.cs.toronto.edu/~kriz/cifar.html) holds `cifar-10-batches-bin/` with
`data_batch_1.bin` .. `data_batch_5.bin` (training) and `test_batch.bin`: each a sequence of
3,073-byte records, one label byte (0-9) then 3,072 pixel bytes, channel-major (1,024 red, then
green, then blue, each a row-major 32x32 image). `data.root` may name that folder, its parent,
the archive itself or a folder holding the archive: the archive's members are read in memory
with tarfile, only the six expected names, never extracted.

The python version (`cifar-10-batches-py/`) is pickled: unpickling runs code, so it is refused.

Every file must be a whole number of records with labels 0-9. With `verify` (data.verify, on by
default) each file must also hold exactly 10,000 records, and an archive given must have the
md5 published on the page above; `verify=false` takes subsets and test files.
"""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from pathlib import Path

import numpy as np

from convexp.errors import DataError

PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
ARCHIVE = "cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # as published on PAGE
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32  # 3,073: the label byte, then the pixels
RECORDS_PER_FILE = 10_000
NUM_CLASSES = 10
# The python version: pickled batches, which convexp never loads.
PYTHON_FOLDER, PYTHON_ARCHIVE = "cifar-10-batches-py", "cifar-10-python.tar.gz"
PYTHON_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"  # as published on PAGE (renamed copies)
PICKLE_NAMES = frozenset({*(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                          "batches.meta"})
BINARY_VERSION = (f'the binary version ("CIFAR-10 binary version (suitable for C programs)", '
                  f"{ARCHIVE} from {PAGE})")


def _pickle_refusal(where: Path) -> DataError:
    return DataError(
        f"{where} is CIFAR-10's python version (pickled batches): a pickle is code, and convexp "
        f"never unpickles a dataset. It reads {BINARY_VERSION}: point data.root at that "
        f"archive or at its {FOLDER}/ folder")


def _is_archive(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz", ".tar"))


def locate(root: Path) -> Path:
    """The folder of .bin files or the archive that `root` names (see the module docstring);
    a DataError naming what is missing or refused."""
    if not root.exists():
        raise DataError(f"data.root={root} does not exist (data=cifar10 reads {FOLDER}/, its "
                        f"parent, or {ARCHIVE}: {BINARY_VERSION})")
    if root.is_file():
        if root.name == PYTHON_ARCHIVE or root.name in PICKLE_NAMES or \
                root.parent.name == PYTHON_FOLDER:
            raise _pickle_refusal(root)
        if _is_archive(root):
            return root
        raise DataError(f"data.root={root} is a file, not {ARCHIVE}: point data.root at the "
                        f"{FOLDER}/ folder, its parent, or the archive")
    if root.name == PYTHON_FOLDER or (
            any((root / name).is_file() for name in PICKLE_NAMES)
            and not any((root / name).is_file() for name in (*TRAIN_FILES, TEST_FILE))):
        raise _pickle_refusal(root)
    if any((root / name).is_file() for name in (*TRAIN_FILES, TEST_FILE)):
        return root
    if (root / FOLDER).is_dir():
        return root / FOLDER
    if (root / ARCHIVE).is_file():
        return root / ARCHIVE
    if (root / PYTHON_FOLDER).is_dir() or (root / PYTHON_ARCHIVE).is_file():
        raise _pickle_refusal(root / (PYTHON_FOLDER if (root / PYTHON_FOLDER).is_dir()
                                      else PYTHON_ARCHIVE))
    raise DataError(
        f"data.root={root} holds no CIFAR-10 binary files: data=cifar10 reads {FOLDER}/ "
        f"({TRAIN_FILES[0]} .. {TRAIN_FILES[-1]}, {TEST_FILE}), the folder that holds it, or "
        f"{ARCHIVE} ({BINARY_VERSION})")


def parse_batch(raw: bytes, where: str, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    """One batch file's bytes -> images (N, 3, 32, 32) uint8 and labels (N,) uint8, read-only
    views of `raw`, after checking the record size, the labels and (with verify) the count."""
    records, extra = divmod(len(raw), RECORD_BYTES)
    if extra or not records:
        raise DataError(
            f"{where}: {len(raw):,} bytes is not a whole number of {RECORD_BYTES:,}-byte records "
            f"(1 label byte + 3,072 pixel bytes; {records:,} records and {extra:,} bytes over)"
            + ("" if records else ": an empty or truncated file"))
    table = np.frombuffer(raw, dtype=np.uint8).reshape(records, RECORD_BYTES)
    labels = table[:, 0]
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"{where}: record {int(bad[0]):,} has label {int(labels[bad[0]])}, but CIFAR-10 "
            f"labels lie in 0-{NUM_CLASSES - 1} ({bad.size:,} such records; not a CIFAR-10 "
            "binary batch, or CIFAR-100's, which has two label bytes?)")
    if verify and records != RECORDS_PER_FILE:
        raise _count_error(where, records)
    return table[:, 1:].reshape(records, *SHAPE), labels


def _check_archive_md5(path: Path) -> None:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual == PYTHON_ARCHIVE_MD5:
        raise _pickle_refusal(path)
    if actual != ARCHIVE_MD5:
        raise DataError(
            f"checksum mismatch for {path}: md5 {actual}, expected {ARCHIVE_MD5} (the "
            f"{ARCHIVE} published on {PAGE}). The archive is corrupted or not the official "
            "one; download it again, or set data.verify=false for a modified copy")


def _member_name(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def read_archive(path: Path, verify: bool) -> dict[str, bytes]:
    """The six batch files' bytes from the archive, by file name, read with tarfile in memory:
    only the members named `cifar-10-batches-bin/<file>`, each a regular file, are read;
    nothing is written to disk (so no member name can reach outside a folder)."""
    if verify:
        _check_archive_md5(path)
    wanted = {f"{FOLDER}/{name}": name for name in (*TRAIN_FILES, TEST_FILE)}
    found: dict[str, bytes] = {}
    pickled = False
    try:
        mode = "r:gz" if path.name.endswith((".gz", ".tgz")) else "r:*"
        with tarfile.open(path, mode) as tar:
            for member in tar:
                name = _member_name(member.name)
                pickled = pickled or name.startswith(PYTHON_FOLDER + "/")
                if name not in wanted or wanted[name] in found:
                    continue
                if not member.isfile():
                    raise DataError(f"{path}: member {member.name} is not a regular file")
                if member.size > RECORDS_PER_FILE * RECORD_BYTES:  # never a bomb in memory
                    raise DataError(
                        f"{path}: member {member.name} has {member.size:,} bytes, more than "
                        f"the official file's {RECORDS_PER_FILE * RECORD_BYTES:,}")
                f = tar.extractfile(member)
                found[wanted[name]] = f.read() if f is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        why = " ".join(str(e).split())  # one line, whatever tarfile says
        raise DataError(f"cannot read {path}: {why} (truncated, or not a tar.gz archive?)") from e
    missing = [name for name in wanted if wanted[name] not in found]
    if missing:
        if pickled:
            raise _pickle_refusal(path)
        raise DataError(f"{path} has no member {missing[0]} ({len(missing)} of the six batch "
                        f"files missing): not {ARCHIVE}?")
    return found


def _check_present(folder: Path) -> None:
    for name in (*TRAIN_FILES, TEST_FILE):
        if not (folder / name).is_file():
            raise DataError(f"missing data file: {folder / name} ({FOLDER}/ holds "
                            f"{TRAIN_FILES[0]} .. {TRAIN_FILES[-1]} and {TEST_FILE})")


def read_folder(folder: Path) -> dict[str, bytes]:
    _check_present(folder)
    files = {}
    for name in (*TRAIN_FILES, TEST_FILE):
        try:
            files[name] = (folder / name).read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {folder / name}: {e.strerror or e}") from None
    return files


def _count_error(where: str, records: int) -> DataError:
    return DataError(f"{where} holds {records:,} records; the official file holds "
                     f"{RECORDS_PER_FILE:,}. Set data.verify=false to train on a subset")


def _identity(paths: list[Path]) -> tuple:
    """What changes when a file is replaced or rewritten: device, inode, size, mtime, ctime."""
    stats = [p.stat() for p in paths]
    return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in stats)


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# What this process read and checked already, by resolved source (folder or archive): (its
# files' identity, the arrays, records per file, whether the archive's md5 was checked). A
# basic-launcher sweep runs its jobs in one process; the arrays are read-only, and the caller
# copies them, so no job's data is shared with another's.
_CACHE: dict[Path, tuple[tuple, Arrays, dict[str, int], bool]] = {}


def load(root: Path, verify: bool) -> Arrays:
    """Train images (50,000, 3, 32, 32) and labels, test images and labels, as read-only uint8
    arrays (fewer records with verify=false), read once per process per unchanged source."""
    source = locate(root).resolve()
    is_archive = source.is_file()
    paths = [source] if is_archive else [source / n for n in (*TRAIN_FILES, TEST_FILE)]
    if not is_archive:
        _check_present(source)

    def where(name: str) -> str:
        return f"{source}:{FOLDER}/{name}" if is_archive else str(source / name)

    identity = _identity(paths)
    entry = _CACHE.get(source)
    if entry is None or entry[0] != identity:
        raw = read_archive(source, verify) if is_archive else read_folder(source)
        parsed = {name: parse_batch(data, where(name), verify) for name, data in raw.items()}
        train = [parsed[name] for name in TRAIN_FILES]
        arrays = (np.concatenate([images for images, _ in train]),
                  np.concatenate([labels for _, labels in train]), *parsed[TEST_FILE])
        for array in arrays:
            array.flags.writeable = False
        counts = {name: len(labels) for name, (_, labels) in parsed.items()}
        entry = (identity, arrays, counts, is_archive and verify)
        _CACHE[source] = entry
    elif verify:
        if is_archive and not entry[3]:  # read before without verify: check it now
            _check_archive_md5(source)
            entry = (*entry[:3], True)
            _CACHE[source] = entry
        for name, count in entry[2].items():
            if count != RECORDS_PER_FILE:
                raise _count_error(where(name), count)
    return entry[1]
