"""ONNX export of a trained checkpoint, for viewing in Netron (https://netron.app)."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch

from convexp.atomic import atomic_write
from convexp.checkpoint import check_trusted, load_checkpoint, resolve_checkpoint
from convexp.errors import ConfigError
from convexp.models import MNIST_SHAPE, build_model
from convexp.schema import to_schema

log = logging.getLogger(__name__)


def load_trained_model(checkpoint: str | Path, named_target: str | None = None,
                       trust: bool = False) -> tuple[torch.nn.Module, dict]:
    """The model of a checkpoint, rebuilt from its own config, in eval mode on the CPU. A
    model that the checkpoint names by `_target_` is built only if `named_target` (the user's
    own model config's) is the same, or with `trust` (see checkpoint.check_trusted)."""
    ckpt = load_checkpoint(checkpoint)
    check_trusted(ckpt, resolve_checkpoint(checkpoint), named_target, trust)
    cfg = to_schema(ckpt["config"])
    image_shape = tuple(ckpt.get("image_shape", MNIST_SHAPE))
    model = build_model(cfg.model, image_shape, ckpt.get("num_classes", 10))
    model.load_state_dict(ckpt["model"])
    return model.eval(), {**ckpt, "image_shape": image_shape}


# The exporter's own progress and its passes' INFO lines (23 of export's 25 lines): the user
# asked for a file, and convexp says where it is.
_NOISY_LOGGERS = ("torch.onnx", "onnx_ir", "onnxscript", "torch.export", "torch._export")


@contextlib.contextmanager
def _quiet_exporter():
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def onnx_metadata(ckpt: dict) -> dict[str, str]:
    """What the ONNX file's user must know to feed it, as its metadata_props: the input's
    shape (a batch of uint8-range images scaled as below), the normalisation the model was
    trained with, and the number of classes (the logits' width)."""
    normalize = ckpt["config"].get("data", {}).get("normalize")
    return {
        "input_shape": json.dumps(["batch", *ckpt["image_shape"]]),
        "input_scaling": ("(pixels / 255 - mean) / std" if normalize
                          else "pixels / 255 (no normalisation)"),
        "normalize_mean": json.dumps(normalize["mean"] if normalize else None),
        "normalize_std": json.dumps(normalize["std"] if normalize else None),
        "num_classes": str(ckpt.get("num_classes", 10)),
        "model": str(ckpt["config"].get("model", {}).get("name")),
    }


def export_onnx(checkpoint: str | Path, out_path: str | Path, opset: int = 18,
                named_target: str | None = None, trust: bool = False) -> Path:
    """Write the checkpoint's model as ONNX with a dynamic batch dimension, check it with
    onnx's checker, and return the file's path. `named_target` and `trust`: see
    load_trained_model."""
    try:
        import onnx
    except ImportError as e:
        raise ConfigError('ONNX export needs the export extra: pip install -e ".[export]"') from e
    source = resolve_checkpoint(checkpoint)
    model, ckpt = load_trained_model(source, named_target, trust)
    example = torch.zeros(2, *ckpt["image_shape"])
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    with _quiet_exporter():
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=opset, input_names=["image"],
            output_names=["logits"], external_data=False,
            # By position, not by name: a user's model may call its input anything
            # (nn.Sequential: `input`), and torch.export rejects a dict keyed by another name.
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    proto = program.model_proto
    for key, value in onnx_metadata(ckpt).items():
        proto.metadata_props.add(key=key, value=value)
    atomic_write(out_path, lambda f: f.write(proto.SerializeToString()))
    onnx.checker.check_model(str(out_path), full_check=True)
    log.info("exported %s to %s", source, out_path)
    return out_path
