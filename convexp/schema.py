"""The typed config schema. Hydra merges every YAML file onto these dataclasses, so an
unknown key or a value of the wrong type fails at composition, naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


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


class DataFormat(str, Enum):
    idx = "idx"
    npy = "npy"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class Mode(str, Enum):
    train = "train"
    summary = "summary"  # print the model summary and exit
    export = "export"  # write ONNX from a checkpoint


@dataclass
class ModelConfig:
    name: str = MISSING
    # kernel_size and dilation are null only for book_cnn, whose layers are fixed.
    kernel_size: int | None = 3
    dilation: int | None = 1
    channels: list[int] = field(default_factory=lambda: [32, 64])
    padding: Padding = Padding.same
    norm: Norm = Norm.batch
    activation: Activation = Activation.relu
    pool: Pool = Pool.max
    head: Head = Head.flatten
    dropout: float = 0.0


@dataclass
class OptimizerConfig:
    name: str = MISSING  # sgd | adam | adamw
    lr: float = MISSING
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd
    nesterov: bool = False  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw
    eps: float = 1e-8  # adam, adamw


@dataclass
class SchedulerConfig:
    name: str = "none"  # none | onecycle | cosine
    pct_start: float = 0.25  # onecycle: share of steps spent warming up
    div_factor: float = 25.0  # onecycle: initial lr = lr / div_factor
    final_div_factor: float = 1e3  # onecycle: final lr = initial lr / final_div_factor
    min_lr: float = 0.0  # cosine
    warmup_steps: int = 0  # cosine: linear warm-up steps


@dataclass
class DataConfig:
    name: str = "mnist"  # mnist | fashion_mnist | kmnist | any name for npy folders
    format: DataFormat = DataFormat.idx
    root: str | None = None  # null: the MNIST files bundled with convexp
    batch_size: int = 128
    eval_batch_size: int = 500
    train_size: int | None = None  # null: all training images not used for validation
    val_size: int = 5000  # carved from the training set, seeded
    test_size: int | None = None  # null: the full test set
    shuffle: bool = True
    random_shift: int = 0  # train-time augmentation: translate each image by up to N pixels
    normalize: bool = True  # false: pixels / 255 in [0, 1], as the textbook
    mean: float = 0.1307
    std: float = 0.3081
    verify: bool = True  # check IDX md5 sums where known


@dataclass
class TrainerConfig:
    max_epochs: int = 3
    max_steps: int | None = None  # null: no cap
    device: Device = Device.auto
    compile: Any = "auto"  # auto | true | false
    compile_mode: str = "default"  # a torch.compile mode
    precision: Precision = Precision.fp32
    channels_last: bool = True
    threads: int | None = None  # torch CPU threads; null: torch's default
    progress: Any = "auto"  # auto (a bar on a terminal) | true | false
    checkpoint: bool = True  # save a checkpoint each epoch
    finite_check_every: int = 50  # steps between (synchronising) checks for a non-finite loss
    drop_last: bool = True  # fixed batch shape: no recompiles, no tiny last step


@dataclass
class LoggerConfig:
    name: str = "none"  # wandb | none
    project: str = "convexp"
    entity: str | None = None
    group: str | None = None  # null: the sweep's name in a multirun
    tags: list[str] = field(default_factory=list)
    run_name: str | None = None  # null: from the config, e.g. "depthwise_dilated k5 d2 s1"
    job_type: str = "train"
    mode: str = "auto"  # auto (online with credentials, else offline) | online | offline | disabled
    log_model: bool = True  # upload the final checkpoint as a model artifact


@dataclass
class Config:
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    seed: int = 0
    mode: Mode = Mode.train
    resume: str | None = None  # a run dir or checkpoint file to continue from
    checkpoint: str | None = None  # mode=export: the checkpoint (or run dir) to export
    objective: str = "best_val_acc"  # summary field returned to sweepers (maximised)


def register_configs() -> None:
    ConfigStore.instance().store(name="config_schema", node=Config)
