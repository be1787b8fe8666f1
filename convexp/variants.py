"""The conv variants' vocabulary, one owner for models, precision, naming and the report.

Torch-free: the report and the naming code import it without torch.

* variant: the operator a config really builds. The four conv model files share one skeleton,
  so `model=standard model.dilation=2` builds the dilated net and its variant is `dilated`.
  Any other model (book_cnn, a user's `_target_` model) is its own variant, under its name.
* operator: the conv family a variant belongs to, as the report's heatmaps and colours group
  them: standard conv (standard, dilated), depthwise-separable conv (depthwise_separable,
  depthwise_dilated); other models under their own name.
* effective kernel size: the span of a dilated kernel, d * (k - 1) + 1.
"""

from __future__ import annotations

from typing import Any

CONV_VARIANTS = ("standard", "dilated", "depthwise_separable", "depthwise_dilated")

STANDARD_CONV = "standard conv"
SEPARABLE_CONV = "depthwise-separable conv"


def effective_kernel_size(kernel_size: int, dilation: int) -> int:
    """The side of the input window one dilated kernel spans."""
    return dilation * (kernel_size - 1) + 1


def is_separable(model_name: str) -> bool:
    """Whether the model file builds depthwise-separable convs (depthwise, then pointwise)."""
    return str(model_name).startswith("depthwise")


def variant_of(model_name: str, dilation: int | None) -> str:
    """The operator a config really builds: standard with dilation 2 is the dilated net."""
    if model_name not in CONV_VARIANTS:
        return model_name
    dilated = (dilation or 1) > 1
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
