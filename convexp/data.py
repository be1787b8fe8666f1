"""Datasets, held whole on the training device as uint8, and the loader that owns their order.

No DataLoader: each epoch `TrainLoader` draws one seeded permutation (and, with
data.random_shift and data.random_flip, seeded per-image shifts and horizontal flips) on the
device and slices uint8 batches from it, as airbench's loader does; the runner only consumes
batches and normalises each on the fly (`Normalizer`, one mean and std per channel), so no
float copy of the set exists. Images are (N, C, H, W): greyscale (C = 1) or colour (C = 3).

Datasets are registered by name with their schema (`@register_dataset`): adding one is a
loader function here (or in any imported module) plus `conf/data/<name>.yaml`.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convexp import cifar
from convexp.errors import ConfigError, DataError
from convexp.registry import Registry

DATASETS: Registry[tuple] = Registry("data")
register_dataset = DATASETS.register

BUNDLED_MNIST = Path(__file__).parent / "datasets" / "mnist"

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# md5 of the decompressed official files, keyed by dataset name then file name.
IDX_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
NUM_CLASSES = 10  # the MNIST family (digits, clothes, Kuzushiji characters) and CIFAR-10
MNIST_SHAPE = (1, 28, 28)


@dataclass
class Split:
    """Images (N, C, H, W) uint8 and labels (N,) int64, on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def batches(
        self, batch_size: int, order: torch.Tensor | None = None, drop_last: bool = False,
        start: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Uint8 image batches and labels, in `order` (indices) or as stored, from batch
        number `start` on."""
        n = len(self)
        stop = n - n % batch_size if drop_last else n
        for i in range(start * batch_size, stop, batch_size):
            if order is None:
                yield self.images[i : i + batch_size], self.labels[i : i + batch_size]
            else:
                idx = order[i : i + batch_size]
                yield self.images[idx], self.labels[idx]


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split | None
    test: Split | None
    num_classes: int = NUM_CLASSES

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    def to(self, device: torch.device) -> Dataset:
        return Dataset(
            self.name, self.train.to(device), self.val.to(device) if self.val else None,
            self.test.to(device) if self.test else None, self.num_classes,
        )


def _per_channel(x) -> list[float] | float:
    """A normalisation statistic as given: one number, or a list of one per channel."""
    return [float(v) for v in x] if isinstance(x, Sequence) and not isinstance(x, str) else x


def check_normalize(normalize, channels: int) -> None:
    """`data.normalize.mean` and `.std`: one number for every channel, or a list of one per
    channel of the images (ConfigError otherwise)."""
    if normalize is None:
        return
    for key in ("mean", "std"):
        stat = _per_channel(getattr(normalize, key))
        if isinstance(stat, list) and len(stat) != channels:
            raise ConfigError(
                f"data.normalize.{key}={stat} has {len(stat)} entries, but the images have "
                f"{channels} channel{'s' if channels > 1 else ''}: give one per channel, or "
                "one number for all")


class Normalizer:
    """uint8 pixels -> float: (x / 255 - mean) / std per channel, or x / 255 with `normalize`
    null. `mean` and `std` are one number for every channel or a list of one per channel."""

    def __init__(self, normalize, device: torch.device | None = None):
        mean, std = (normalize.mean, normalize.std) if normalize is not None else (0.0, 1.0)
        mean, std = _per_channel(mean), _per_channel(std)
        if isinstance(mean, list) or isinstance(std, list):  # (1, C, 1, 1) tensors
            n = len(mean) if isinstance(mean, list) else len(std)
            mean = mean if isinstance(mean, list) else [mean] * n
            std = std if isinstance(std, list) else [std] * n
            self.scale = torch.tensor([1.0 / (255.0 * s) for s in std],
                                      device=device).view(1, -1, 1, 1)
            self.shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)],
                                      device=device).view(1, -1, 1, 1)
        else:  # Python floats: the one-statistic path, as it has always computed
            self.scale = 1.0 / (255.0 * std)
            self.shift = -mean / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if isinstance(self.scale, torch.Tensor) and self.scale.device != images.device:
            self.scale, self.shift = self.scale.to(images.device), self.shift.to(images.device)
        return images.float() * self.scale + self.shift


class TrainLoader:
    """The training batches: the epoch's seeded order, its seeded random flips and shifts,
    batching.

    Order, flips and shifts are functions of (seed, epoch) only, so a run resumed mid-epoch
    replays exactly the batches an uninterrupted run would have seen, from batch `start` on."""

    def __init__(self, split: Split, cfg, seed: int, drop_last: bool):
        self.split, self.seed, self.drop_last = split, seed, drop_last
        self.batch_size, self.shuffle, self.max_shift = (
            cfg.batch_size, cfg.shuffle, cfg.random_shift)
        self.flip = bool(cfg.get("random_flip", False))
        n = len(split)
        self.steps_per_epoch = n // self.batch_size if drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, device, bs = len(self.split), self.split.images.device, self.batch_size
        order = epoch_order(n, self.seed, epoch, device) if self.shuffle else None
        shifts = (epoch_shifts(n, self.max_shift, self.seed, epoch, device)
                  if self.max_shift > 0 else None)
        flips = epoch_flips(n, self.seed, epoch, device) if self.flip else None
        for i, (images, labels) in enumerate(
                self.split.batches(bs, order, self.drop_last, start), start):
            if flips is not None:
                images = flip_images(images, flips[i * bs : (i + 1) * bs])
            if shifts is not None:
                images = shift_images(images, shifts[i * bs : (i + 1) * bs], self.max_shift)
            yield images, labels


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The permutation for one epoch: a function of (seed, epoch) only, so a resumed run
    replays exactly the order an uninterrupted run would have used."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen, device=device)


def epoch_shifts(n: int, max_shift: int, seed: int, epoch: int, device: torch.device
                 ) -> torch.Tensor:
    """Per-image (dy, dx) translations in [-max_shift, max_shift] for one epoch, indexed by
    position in the epoch's order: like the order, a function of (seed, epoch) only."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * 1_000_003 + epoch + 500_000)  # a stream apart from epoch_order's
    return torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen, device=device)


def epoch_flips(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """Per-image horizontal flips (bool) for one epoch, each with probability 1/2, indexed by
    position in the epoch's order: a function of (seed, epoch) only, from a stream of its own
    (turning flips on or off leaves the order and the shifts as they were)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * 1_000_003 + epoch + 250_000)  # apart from epoch_order's and shifts'
    return torch.randint(0, 2, (n,), generator=gen, device=device).bool()


def flip_images(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images of a (B, C, H, W) batch whose flag in `flips` is set."""
    return torch.where(flips[:, None, None, None], images.flip(-1), images)


def shift_images(images: torch.Tensor, shifts: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image of a (B, C, H, W) batch by its (dy, dx), every channel alike,
    filling with zeros (MNIST's background, black in colour), as one gather on the batch's
    device."""
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)
    rows = torch.arange(h, device=images.device) + max_shift - shifts[:, :1]  # (B, H)
    cols = torch.arange(w, device=images.device) + max_shift - shifts[:, 1:]  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


# --- reading files -------------------------------------------------------------------------


def _find_idx(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"missing data file: {root / stem}[.gz] not found. data.root={root} should hold the "
        f"four IDX files ({', '.join(IDX_FILES.values())}), plain or gzipped."
    )


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {e} (truncated or not a gzip file?)") from e


def read_idx(path: Path, expected_magic: int, expected_md5: str | None = None) -> np.ndarray:
    """One IDX file (optionally gzipped) as a uint8 array, checked against its header, its
    expected magic number and, where known, the md5 of its decompressed bytes."""
    return _parse_idx(path, _read_bytes(path), expected_magic, expected_md5)


def _check_md5(path: Path, raw: bytes, expected_md5: str) -> None:
    actual = hashlib.md5(raw).hexdigest()
    if actual != expected_md5:
        raise DataError(
            f"checksum mismatch for {path}: md5 of the decompressed file is {actual}, "
            f"expected {expected_md5}. The file is corrupted or not the official one; "
            f"replace it, or set data.verify=false for a modified copy."
        )


def _parse_idx(path: Path, raw: bytes, expected_magic: int, expected_md5: str | None
               ) -> np.ndarray:
    if expected_md5 is not None:
        _check_md5(path, raw, expected_md5)
    ndim = {IMAGES_MAGIC: 3, LABELS_MAGIC: 1}[expected_magic]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than its IDX header")
    magic = struct.unpack(">i", raw[:4])[0]
    if magic != expected_magic:
        kind = "images" if expected_magic == IMAGES_MAGIC else "labels"
        raise DataError(
            f"{path} has magic number {magic}, expected {expected_magic} (IDX {kind}, uint8)"
        )
    dims = struct.unpack(f">{ndim}i", raw[4:header_size])
    expected_size = header_size + int(np.prod(dims))
    if len(raw) != expected_size:
        raise DataError(
            f"{path}: its header declares shape {dims}, i.e. {expected_size} bytes, but the file "
            f"has {len(raw)} bytes ({'truncated' if len(raw) < expected_size else 'trailing data'})"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


# Arrays already read and checked in this process, by resolved path: (the file's identity when
# read, raw bytes, magic, array, md5 sums it matched). A basic-launcher sweep runs its jobs in
# one process; without this each job re-read, decompressed and hashed the bundled MNIST again
# (0.31 s per job on the Zen 4). The arrays are read-only views of the bytes; `_to_split` copies
# them, so no job's tensors are shared with another's.
_IDX_CACHE: dict[Path, tuple[tuple, bytes, int, np.ndarray, set[str]]] = {}


def _file_identity(path: Path) -> tuple:
    """What changes when the file is replaced or rewritten: device, inode, size, mtime, ctime."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def read_idx_cached(path: Path, expected_magic: int, expected_md5: str | None = None
                    ) -> np.ndarray:
    """`read_idx`, reading and checking each file once per process: a later call for the same
    unchanged file returns the same read-only array (hashing it only for an md5 not yet
    checked). A changed file (identity above) is read again; failures are not cached."""
    path = path.resolve()
    identity = _file_identity(path)
    entry = _IDX_CACHE.get(path)
    if entry is None or entry[0] != identity or entry[2] != expected_magic:
        raw = _read_bytes(path)
        array = _parse_idx(path, raw, expected_magic, expected_md5)
        entry = (identity, raw, expected_magic, array, set())
        if expected_md5 is not None:
            entry[4].add(expected_md5)
        _IDX_CACHE[path] = entry
    elif expected_md5 is not None and expected_md5 not in entry[4]:
        _check_md5(path, entry[1], expected_md5)
        entry[4].add(expected_md5)
    return entry[3]


def load_idx_dataset(root: Path, name: str, verify: bool) -> tuple[Split, Split]:
    known = IDX_MD5.get(name, {}) if verify else {}
    arrays = {}
    for key, stem in IDX_FILES.items():
        magic = IMAGES_MAGIC if key.endswith("images") else LABELS_MAGIC
        arrays[key] = read_idx_cached(_find_idx(root, stem), magic, known.get(stem))
    splits = []
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        _check_pair(images, labels, f"{root}/{part}")
        splits.append(_to_split(images, labels))
    return splits[0], splits[1]


def _check_pair(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(
            f"{where}: labels must lie in 0-{NUM_CLASSES - 1}, found {int(labels.max())}"
        )


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    """A private copy of (N, H, W) or (N, C, H, W) uint8 images as (N, C, H, W)."""
    tensor = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True, order="C"))
    return Split(tensor.unsqueeze(1) if tensor.dim() == 3 else tensor,
                 torch.from_numpy(labels.astype(np.int64)))


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {what} from {path}: {e}") from e


def as_uint8_images(x: np.ndarray, where: Path) -> np.ndarray:
    """uint8 images as they are; float images in [0, 1] that are exact multiples of 1/255 (the
    textbook's `x_train`, uint8 pixels / 255 as float32) converted back to uint8 exactly, so
    the dataset stays uint8 on the device. Other float data is refused: normalising it as
    pixels / 255 would be wrong, silently."""
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating) and x.size:
        nonfinite = int(np.count_nonzero(~np.isfinite(x)))
        if nonfinite:
            nan = int(np.count_nonzero(np.isnan(x)))
            what = f"{nan} NaN" + (f" and {nonfinite - nan} infinite" if nonfinite > nan else "")
            raise DataError(f"{where}: images hold {what} pixel values (of {x.size}); images "
                            "must be uint8 pixels, or float32 pixels / 255 in [0, 1]")
        pixels = np.rint(x.astype(np.float64) * 255.0)
        # float32 k/255 is within ~3e-6 of k/255: 1e-3 of a grey level separates them.
        if (np.all(np.isfinite(x)) and pixels.min() >= 0 and pixels.max() <= 255
                and np.abs(x.astype(np.float64) * 255.0 - pixels).max() < 1e-3):
            return pixels.astype(np.uint8)
        raise DataError(
            f"{where}: float images must be uint8 pixels / 255 (values k/255 in [0, 1]); these "
            f"are not (range {float(np.nanmin(x)):.4g}..{float(np.nanmax(x)):.4g}). Convert "
            "them to uint8 pixels first, e.g. np.save(path, np.clip(np.rint(x * 255), 0, "
            "255).astype(np.uint8)) for [0, 1] data."
        )
    raise DataError(f"{where}: expected uint8 images (or float32 pixels / 255), got {x.dtype}")


CHANNELS = (1, 3)  # greyscale or colour
NPY_LAYOUTS = "(N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3"


def npy_layout(shape: tuple, where: Path) -> str:
    """The layout of an image array's shape: "NHW" (greyscale), "NHWC" (numpy's and most
    exports') or "NCHW" (torch's). A 4-D shape is read by which axis holds 1 or 3 channels;
    one where both or neither of axes 1 and 3 could be refused (DataError naming it)."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        first, last = shape[1] in CHANNELS, shape[3] in CHANNELS
        if first != last:
            return "NCHW" if first else "NHWC"
        why = ("ambiguous: axis 1 and axis 3 could both be the channels" if first else
               "no axis 1 or 3 of 1 or 3 channels")
        raise DataError(f"{where}: images of shape {tuple(shape)} are {why}; expected "
                        f"{NPY_LAYOUTS}")
    raise DataError(f"{where}: expected images of shape {NPY_LAYOUTS}, got {len(shape)}-D "
                    f"{tuple(shape)}")


def as_nchw(x: np.ndarray, where: Path) -> np.ndarray:
    """Images in any layout `npy_layout` accepts, as (N, C, H, W) (a view)."""
    layout = npy_layout(x.shape, where)
    return x[:, None] if layout == "NHW" else x.transpose(0, 3, 1, 2) if layout == "NHWC" else x


def npy_image_shape(root: Path) -> tuple[int, int, int]:
    """(C, H, W) of x_train.npy, from its header alone (mode=summary)."""
    path = root / "x_train.npy"
    if not path.is_file():
        raise DataError(f"missing data file: {path} (data=npy reads x_train.npy and "
                        "y_train_label.npy from data.root)")
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read images from {path}: {e}") from e
    return tuple(as_nchw(x, path).shape[1:])


def load_npy_dataset(root: Path) -> tuple[Split, Split | None]:
    """The textbook's arrays: x_train.npy (N, 28, 28), uint8 or float32 in [0, 1] (pixels / 255,
    as the chapter feeds them to Conv2d), y_train_label.npy (N,) integer labels in 0-9;
    x_test.npy and y_test_label.npy optional. Colour images too: (N, H, W, C) or (N, C, H, W),
    C = 1 or 3 (`npy_layout`)."""
    def pair(x_name: str, y_name: str) -> Split:
        x = _load_npy(root / x_name, "images")
        y = _load_npy(root / y_name, "labels")
        npy_layout(x.shape, root / x_name)
        if x.size == 0:
            raise DataError(f"{root / x_name}: the array is empty (shape {x.shape}): no images")
        x = as_uint8_images(as_nchw(x, root / x_name), root / x_name)
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{root / y_name}: expected integer labels of shape (N,), got {y.dtype} {y.shape}"
            )
        if y.size and (int(y.min()) < 0 or int(y.max()) >= NUM_CLASSES):
            raise DataError(
                f"{root / y_name}: labels must lie in 0-{NUM_CLASSES - 1}, "
                f"found {int(y.min())}..{int(y.max())}"
            )
        _check_pair(x, y, str(root))
        return _to_split(x, y)

    for required in ("x_train.npy", "y_train_label.npy"):
        if not (root / required).is_file():
            raise DataError(f"missing data file: {root / required} (data=npy reads "
                            f"x_train.npy and y_train_label.npy from data.root)")
    train = pair("x_train.npy", "y_train_label.npy")
    test_files = [(root / name).is_file() for name in ("x_test.npy", "y_test_label.npy")]
    if any(test_files) and not all(test_files):
        found, missing = (("x_test.npy", "y_test_label.npy") if test_files[0]
                          else ("y_test_label.npy", "x_test.npy"))
        raise DataError(f"{root / found} has no {missing} beside it: a test set is the pair "
                        "x_test.npy and y_test_label.npy (give both, or neither to train "
                        "without a test set)")
    has_test = all(test_files)
    test = pair("x_test.npy", "y_test_label.npy") if has_test else None
    if test is not None and test.images.shape[1:] != train.images.shape[1:]:
        raise DataError(f"{root}: test images are (C, H, W) {tuple(test.images.shape[1:])}, "
                        f"train images {tuple(train.images.shape[1:])}")
    return train, test


# --- the datasets -----------------------------------------------------------------------


# A loader may say what its images are without reading them (`image_shape`: a (C, H, W) tuple,
# or a function of the data config), for mode=summary; and that data.root may name a file
# (`root_may_be_file`, e.g. an archive) rather than a folder.


@register_dataset("mnist")
def mnist(cfg, root: Path) -> tuple[Split, Split]:
    return load_idx_dataset(root, "mnist", cfg.verify)


def _idx(name: str) -> Callable:
    def load(cfg, root: Path) -> tuple[Split, Split]:
        return load_idx_dataset(root, name, verify=False)  # no md5 sums known

    return load


register_dataset("fashion_mnist")(_idx("fashion_mnist"))
register_dataset("kmnist")(_idx("kmnist"))
for _name in ("mnist", "fashion_mnist", "kmnist"):
    DATASETS.get(_name).image_shape = MNIST_SHAPE


@register_dataset("npy")
def npy(cfg, root: Path) -> tuple[Split, Split | None]:
    return load_npy_dataset(root)


def _npy_shape(cfg) -> tuple[int, int, int]:
    if cfg.get("root") is None:  # data.root not given: the textbook's MNIST arrays
        return MNIST_SHAPE
    return npy_image_shape(data_root(cfg))


npy.image_shape = _npy_shape


@register_dataset("cifar10")
def cifar10(cfg, root: Path) -> tuple[Split, Split]:
    """The official binary distribution (convexp.cifar): 50,000 training and 10,000 test
    images, 3x32x32."""
    train_images, train_labels, test_images, test_labels = cifar.load(root, cfg.verify)
    return _to_split(train_images, train_labels), _to_split(test_images, test_labels)


cifar10.image_shape = cifar.SHAPE
cifar10.root_may_be_file = True  # the archive, cifar-10-binary.tar.gz


def data_root(cfg) -> Path:
    return BUNDLED_MNIST if cfg.root is None else Path(cfg.root).expanduser()


def dataset_image_shape(cfg) -> tuple[int, int, int]:
    """(C, H, W) of a data config's images without loading the dataset (mode=summary): the
    dataset's own shape, x_train.npy's header for data=npy; MNIST's for a dataset registered
    without one."""
    shape = getattr(DATASETS.get(cfg.name), "image_shape", MNIST_SHAPE)
    return tuple(shape(cfg) if callable(shape) else shape)


def load_dataset(cfg, seed: int) -> Dataset:
    """Load and split the dataset described by a data config, on the CPU."""
    root = data_root(cfg)
    loader = DATASETS.get(cfg.name)
    try:
        if not root.is_dir() and not getattr(loader, "root_may_be_file", False):
            raise DataError(f"data.root={root} is not a folder")
        full_train, test = loader(cfg, root)
    except OSError as e:  # e.g. a root we may not read
        raise DataError(f"cannot read data.root={root}: {e.strerror or e}") from None
    check_normalize(cfg.normalize, full_train.images.shape[1])
    height, width = full_train.images.shape[2:]
    if cfg.random_shift > min(height, width) // 2:
        raise ConfigError(f"data.random_shift={cfg.random_shift} must lie in [0, "
                          f"{min(height, width) // 2}] for {height}x{width} images")
    train, val = split_train_val(full_train, cfg.val_size, cfg.train_size, seed)
    if cfg.test_size is not None:
        if test is None:
            raise ConfigError(f"data.test_size={cfg.test_size}, but {root} has no test set "
                              "(leave data.test_size null)")
        if cfg.test_size > len(test):
            raise ConfigError(f"data.test_size={cfg.test_size} is larger than the test set "
                              f"({len(test)} images): use at most {len(test)}, or null for all")
        test = Split(test.images[: cfg.test_size], test.labels[: cfg.test_size])
    return Dataset(cfg.name, train, val, test)


def split_train_val(
    full: Split, val_size: int, train_size: int | None, seed: int
) -> tuple[Split, Split | None]:
    """A seeded validation split carved from the training set; train_size subsamples the rest
    (keeping the stored order, which the textbook's unshuffled recipe relies on)."""
    n = len(full)
    if val_size < 0 or val_size >= n:
        raise ConfigError(
            f"data.val_size={val_size} must lie in [0, {n - 1}]: the training set has {n} images"
        )
    available = n - val_size
    if train_size is not None and not 0 < train_size <= available:
        raise ConfigError(
            f"data.train_size={train_size} must lie in [1, {available}]: the training set has "
            f"{n} images, of which data.val_size={val_size} are held out for validation"
        )
    if val_size == 0:
        train_idx, val = torch.arange(n), None
    else:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
        val = Split(full.images[val_idx], full.labels[val_idx])
    if train_size is not None:
        train_idx = train_idx[:train_size]
    return Split(full.images[train_idx], full.labels[train_idx]), val
