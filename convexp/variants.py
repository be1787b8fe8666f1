"""The conv variants' vocabulary, one owner for models, precision, naming and the report.

Torch-free: the report and the naming code import it without torch.

* variant: the operator a config really builds. The four conv model files share one skeleton,
  so `model=standard model.dilation=2` builds the dilated net and its variant is `dilated`.
  Any other model (book_cnn, a user's `_target_` model) is its own variant, under its name.
* operator: the conv family a variant belongs to, as the report's heatmaps and colours group
  them: standard conv (standard, dilated), depthwise-separable conv (depthwise_separable,
  depthwise_dilated); other models under their own name.
* effective kernel size: the span of a dilated kernel, d * (k - 1) + 1.
* dilation schedule: `model.dilation` is one int for every block, or a list with one per
  block (`[1, 2, 5]`, hybrid dilated convolution); `dilation_text` writes either (`2`,
  `1-2-5`), `dilation_key` makes either hashable and sortable (the report groups by it).
"""

from __future__ import annotations

from typing import Any

CONV_VARIANTS = ("standard", "dilated", "depthwise_separable", "depthwise_dilated")

STANDARD_CONV = "standard conv"
SEPARABLE_CONV = "depthwise-separable conv"


def effective_kernel_size(kernel_size: int, dilation: int) -> int:
    """The side of the input window one dilated kernel spans."""
    return dilation * (kernel_size - 1) + 1


def dilation_schedule(dilation: Any, blocks: int) -> list[int]:
    """One dilation per block: an int repeated, or the list itself (checked by the caller)."""
    if isinstance(dilation, (int, float, str)) or dilation is None:
        return [int(dilation or 1)] * blocks
    return [int(d) for d in dilation]


def is_dilated(dilation: Any) -> bool:
    """Whether an int or a schedule dilates any block."""
    if dilation is None or isinstance(dilation, (int, float, str)):
        return int(dilation or 1) > 1
    return any(int(d) > 1 for d in dilation)


def dilation_key(dilation: Any) -> Any:
    """A hashable form: an int as it is, a schedule as a tuple (a list in summary.json)."""
    if dilation is None or isinstance(dilation, (int, float, str)):
        return dilation
    return tuple(int(d) for d in dilation)


def dilation_sort_key(dilation: Any) -> tuple:
    """Sorts ints and schedules together: ints and schedules by their entries, none last."""
    key = dilation_key(dilation)
    if key is None:
        return (1, ())
    return (0, key if isinstance(key, tuple) else (int(key),))


def dilation_text(dilation: Any) -> str:
    """`2` for an int, `1-2-5` for a schedule, `-` for none."""
    key = dilation_key(dilation)
    if key is None:
        return "-"
    return "-".join(map(str, key)) if isinstance(key, tuple) else str(key)


def is_separable(model_name: str) -> bool:
    """Whether the model file builds depthwise-separable convs (depthwise, then pointwise)."""
    return str(model_name).startswith("depthwise")


def variant_of(model_name: str, dilation: Any) -> str:
    """The operator a config really builds: standard with dilation 2 is the dilated net, and so
    is standard with a schedule that dilates any block (`[1, 2]`)."""
    if model_name not in CONV_VARIANTS:
        return model_name
    dilated = is_dilated(dilation)
    if is_separable(model_name):
        return "depthwise_dilated" if dilated else "depthwise_separable"
    return "dilated" if dilated else "standard"


def operator_of(model: Any) -> str:
    """The conv operator family of a model or variant name: `standard`/`dilated` -> standard
    conv, names starting with `depthwise` -> depthwise-separable conv, others by their name."""
    name = str(model) if model is not None else "?"
    if name in ("standard", "dilated"):
        return STANDARD_CONV
    if is_separable(name):
        return SEPARABLE_CONV
    return name
