"""The config layer: the typed schema every YAML file merges onto, and the helpers that read it.

Each config group (model, optimizer, scheduler, data, logger) has a base dataclass here and one
dataclass per option, defined next to the option's builder (`convexp/optim.py`,
`convexp/models.py`, ...) and stored in Hydra's ConfigStore as `schema/<group>/<name>` when the
builder is registered. Each option's YAML names its schema first in its defaults list, so a field
that does not apply to the chosen option (`optimizer.momentum` under AdamW) fails at
composition, naming the field and the option's schema. This module imports neither torch nor
any component: the import graph runs config -> data/models -> runner -> job -> entry points.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from convexp.launcher_configs import quiet_launcher_schema_warning

# The largest seed the seeding code takes: epoch orders and shifts are seeded with
# seed * 1_000_003 + epoch (+ 500_000), which must stay below 2**63 for torch.Generator.
MAX_SEED = 2**32 - 1


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, Enum):
    auto = "auto"  # bf16 where the hardware runs it natively and it is measured faster
    fp32 = "fp32"
    bf16 = "bf16"


class Mode(str, Enum):
    train = "train"
    summary = "summary"  # print the model summary and exit
    export = "export"  # write ONNX from a checkpoint


class Objective(str, Enum):
    """The summary field a job returns to sweepers, maximised."""

    best_val_acc = "best_val_acc"
    final_val_acc = "final_val_acc"
    test_acc = "test_acc"


# --- group bases: the fields every option of a group has ------------------------------------


@dataclass
class ModelConfig:
    name: str = MISSING


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = MISSING
    weight_decay: float = 0.0


@dataclass
class SchedulerConfig:
    name: str = MISSING


@dataclass
class Normalize:
    """Per-pixel (x / 255 - mean) / std. `data.normalize=null` feeds x / 255 in [0, 1]."""

    # One number for every channel, or a list of one per channel ([0.4914, 0.4822, 0.4465]).
    # OmegaConf has no float | list[float]: convexp.validate checks them, and the loaded
    # images' channel count checks a list's length (convexp.data.check_normalize).
    mean: Any = 0.1307
    std: Any = 0.3081


@dataclass
class DataConfig:
    name: str = MISSING
    root: str | None = None  # null: the dataset's default location, where it has one
    batch_size: int = 128
    eval_batch_size: int = 500
    train_size: int | None = None  # null: all training images not used for validation
    val_size: int = 5000  # carved from the training set, seeded
    test_size: int | None = None  # null: the full test set
    shuffle: bool = True
    random_shift: int = 0  # train-time augmentation: translate each image by up to N pixels
    random_flip: bool = False  # train-time augmentation: mirror half the images left-right
    normalize: Normalize | None = field(default_factory=Normalize)


@dataclass
class LoggerConfig:
    name: str = MISSING


@dataclass
class TrainerConfig:
    max_epochs: int = 3
    max_steps: int | None = None  # null: no cap
    device: Device = Device.auto
    compile: bool | None = None  # null: compile where it is measured faster (CUDA)
    compile_mode: str | None = None  # a torch.compile mode; null: torch's default
    precision: Precision = Precision.auto
    channels_last: bool = True
    threads: int | None = None  # torch CPU threads; null: cores / parallel jobs
    progress: bool | None = None  # null: a bar on a terminal, log lines otherwise
    progress_every_s: float = 10.0  # seconds between progress log lines
    checkpoint: bool = True  # save a checkpoint each epoch
    finite_check_every: int = 50  # steps between (synchronising) checks for a non-finite loss
    drop_last: bool = True  # fixed batch shape: no recompiles, no tiny last step


@dataclass
class Config:
    # The groups are typed by their options' schemas (chosen in the defaults list), not here:
    # a model given by `_target_` brings its own fields.
    model: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    data: Any = MISSING
    trainer: TrainerConfig = MISSING
    logger: Any = MISSING
    seed: int = 0
    mode: Mode = Mode.train
    resume: str | None = None  # a run dir or checkpoint file to continue from
    checkpoint: str | None = None  # mode=export: the checkpoint (or run dir) to export
    # Build a `_target_` model that only the checkpoint (resume= or checkpoint=) names.
    trust_checkpoint: bool = False
    objective: Objective = Objective.best_val_acc


def value(option: Any) -> Any:
    """An enum member from the typed config as its plain value; anything else as it is."""
    return option.value if isinstance(option, Enum) else option


GROUPS = ("model", "optimizer", "scheduler", "data", "logger")
_option_schemas: dict[tuple[str, str], type] = {}


def register_option_schema(group: str, name: str, schema: type) -> None:
    """Make `schema` the typed schema of option `name` of `group`: `schema/<group>/<name>` in
    Hydra's ConfigStore, which the option's YAML names first in its defaults list."""
    _option_schemas[(group, name)] = schema
    ConfigStore.instance().store(group=f"schema/{group}", name=name, node=schema)


def option_schema(group: str, name: str) -> type | None:
    return _option_schemas.get((group, name))


def new_run_dir(stamp: str) -> str:
    """A run dir no other run can share: `outputs/<stamp>_<random suffix>`, stamp
    `YYYY-MM-DD/HH-MM-SS` (the CLI's hydra.run.dir and the Python API's default)."""
    return f"outputs/{stamp}_{secrets.token_hex(3)}"


def _run_dir(mode: Any, resume: str | None, checkpoint: str | None, stamp: str) -> str:
    """hydra.run.dir: the resumed run's own dir; for an export, the exported run's dir (the
    ONNX file goes beside its checkpoint); else a new dir that no other run can share."""
    source = resume if value(mode) == "train" else checkpoint if value(mode) == "export" else None
    if source:
        path = Path(source).expanduser()
        return str(path.parent.parent if path.suffix == ".pt" else path)
    return new_run_dir(stamp)


def _output_subdir(mode: Any, resume: str | None) -> str | None:
    """hydra.output_subdir: none for a resumed run or an export, whose dir's .hydra/ records
    the config that trained it; .hydra otherwise."""
    return None if (value(mode) == "train" and resume) or value(mode) == "export" else ".hydra"


def register_configs() -> None:
    ConfigStore.instance().store(name="config_schema", node=Config)
    quiet_launcher_schema_warning()
    # Cached: every read of the run dir in one process (and in a sweep's jobs, which copy the
    # cache) gives the same dir.
    if not OmegaConf.has_resolver("convexp.run_dir"):
        OmegaConf.register_new_resolver("convexp.run_dir", _run_dir, use_cache=True)
        OmegaConf.register_new_resolver("convexp.uid", lambda: secrets.token_hex(3),
                                        use_cache=True)
        OmegaConf.register_new_resolver("convexp.output_subdir", _output_subdir)


register_configs()


# --- reading configs ------------------------------------------------------------------------


def to_container(cfg) -> dict:
    """A plain, resolved dict (enums as strings): what summary.json, checkpoints and W&B hold."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def to_schema(cfg: DictConfig | dict) -> DictConfig:
    """A plain config (e.g. from a checkpoint) merged onto the typed schema, each group onto
    its option's schema where the option has one."""
    plain = cfg if isinstance(cfg, dict) else to_container(cfg)
    typed = OmegaConf.structured(Config)
    pieces = {}
    for group in GROUPS:
        node = plain.get(group)
        schema = option_schema(group, node.get("name")) if isinstance(node, dict) else None
        if schema is not None and "_target_" not in node:
            pieces[group] = OmegaConf.merge(OmegaConf.structured(schema), node)
    merged = OmegaConf.merge(typed, {k: v for k, v in plain.items() if k not in pieces})
    for group, node in pieces.items():
        merged[group] = node
    OmegaConf.set_readonly(merged, False)
    return merged
