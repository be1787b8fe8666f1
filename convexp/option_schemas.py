"""The typed schema of each built-in option of each config group (`optimizer=adamw` ->
AdamWConfig), torch-free: importing this module stores them in Hydra's ConfigStore as
`schema/<group>/<name>`, which the options' YAML files name first in their defaults lists. The
CLI imports it alone for `--help`, `--cfg`, `--info` and shell completion, which compose the
config without importing torch; the builders' modules (models.py, data.py, optim.py,
loggers.py) import their schemas from here and register them again with their builders."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

from convexp.schema import (
    DataConfig,
    LoggerConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    register_option_schema,
)

# --- model (convexp/models.py) ---------------------------------------------------------------


class Padding(str, Enum):
    same = "same"
    valid = "valid"


class Norm(str, Enum):
    batch = "batch"
    none = "none"


class Activation(str, Enum):
    relu = "relu"
    gelu = "gelu"
    silu = "silu"


class Pool(str, Enum):
    max = "max"
    avg = "avg"
    none = "none"


class Head(str, Enum):
    flatten = "flatten"  # flatten the last feature map into a Linear layer, as the textbook does
    avg = "avg"  # global average pooling, then Linear


@dataclass
class ConvNetConfig(ModelConfig):
    """The four conv variants: blocks of conv -> norm -> activation -> pool, then a linear
    classifier. Only the conv operator differs between them."""

    kernel_size: int = 3
    # One int for every block, or a list with one per block ([1, 2, 5]: hybrid dilated
    # convolution). OmegaConf has no int | list[int]: convexp.validate checks it.
    dilation: Any = 1
    channels: list[int] = field(default_factory=lambda: [32, 64])
    padding: Padding = Padding.same
    norm: Norm = Norm.batch
    activation: Activation = Activation.relu
    pool: Pool = Pool.max
    head: Head = Head.flatten
    dropout: float = 0.0


@dataclass
class BookCNNConfig(ModelConfig):
    """The textbook's fixed network: no field but its name."""

    name: str = "book_cnn"


# --- data (convexp/data.py) ------------------------------------------------------------------


@dataclass
class MnistConfig(DataConfig):
    name: str = "mnist"
    verify: bool = True  # check the four files' md5 sums (the official ones)


@dataclass
class IdxConfig(DataConfig):
    """An MNIST-format dataset in torchvision's IDX layout: four files in `root`."""

    root: str = MISSING


@dataclass
class NpyConfig(DataConfig):
    """The textbook's numpy arrays in `root`."""

    name: str = "npy"
    root: str = MISSING


@dataclass
class Cifar10Config(DataConfig):
    """CIFAR-10's official binary distribution: `root` is cifar-10-batches-bin/, its parent,
    or cifar-10-binary.tar.gz (or a folder holding it)."""

    name: str = "cifar10"
    root: str = MISSING
    verify: bool = True  # 10,000 records per file, and the archive's published md5


# --- optimizer and scheduler (convexp/optim.py) -----------------------------------------------


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "adam"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class AdamWConfig(AdamConfig):
    name: str = "adamw"


@dataclass
class NoScheduleConfig(SchedulerConfig):
    name: str = "none"


@dataclass
class OneCycleConfig(SchedulerConfig):
    name: str = "onecycle"
    pct_start: float = 0.25  # share of steps spent warming up
    div_factor: float = 25.0  # initial lr = lr / div_factor
    final_div_factor: float = 1e3  # final lr = initial lr / final_div_factor


@dataclass
class CosineConfig(SchedulerConfig):
    name: str = "cosine"
    min_lr: float = 0.0
    warmup_steps: int = 0  # linear warm-up steps


# --- logger (convexp/loggers.py) -------------------------------------------------------------


@dataclass
class NoLoggerConfig(LoggerConfig):
    name: str = "none"


class WandbMode(str, Enum):
    auto = "auto"  # online with W&B credentials (or WANDB_MODE), offline without
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class WandbConfig(LoggerConfig):
    name: str = "wandb"
    project: str = "convexp"
    entity: str | None = None
    group: str | None = None  # null: the sweep's name in a multirun
    tags: list[str] = field(default_factory=list)
    run_name: str | None = None  # null: from the config, e.g. "depthwise_dilated k5 d2 s1"
    job_type: str = "train"
    mode: WandbMode = WandbMode.auto
    log_model: bool = True  # upload the final checkpoint as a model artifact


OPTION_SCHEMAS: dict[tuple[str, str], type] = {
    **{("model", name): ConvNetConfig for name in (
        "standard", "dilated", "depthwise_separable", "depthwise_dilated")},
    ("model", "book_cnn"): BookCNNConfig,
    ("data", "mnist"): MnistConfig,
    ("data", "fashion_mnist"): IdxConfig,
    ("data", "kmnist"): IdxConfig,
    ("data", "npy"): NpyConfig,
    ("data", "cifar10"): Cifar10Config,
    ("optimizer", "sgd"): SGDConfig,
    ("optimizer", "adam"): AdamConfig,
    ("optimizer", "adamw"): AdamWConfig,
    ("scheduler", "none"): NoScheduleConfig,
    ("scheduler", "onecycle"): OneCycleConfig,
    ("scheduler", "cosine"): CosineConfig,
    ("logger", "none"): NoLoggerConfig,
    ("logger", "wandb"): WandbConfig,
}
for (_group, _name), _schema in OPTION_SCHEMAS.items():
    register_option_schema(_group, _name, _schema)
