"""convexp.variants: the torch-free vocabulary agrees with the nets convexp builds."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from torch import nn

from convexp.introspect import describe
from convexp.models import build_model
from convexp.variants import (
    CONV_VARIANTS,
    SEPARABLE_CONV,
    STANDARD_CONV,
    effective_kernel_size,
    is_separable,
    operator_of,
    variant_of,
)


def conv_net(name: str, kernel_size: int = 3, dilation: int = 1, padding: str = "same"):
    cfg = OmegaConf.create({"name": name, "kernel_size": kernel_size, "dilation": dilation,
                            "channels": [4, 8], "padding": padding, "norm": "batch",
                            "activation": "relu", "pool": "max", "head": "flatten",
                            "dropout": 0.0})
    return build_model(cfg)


def spatial_convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules()
            if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1]


@pytest.mark.parametrize("name", CONV_VARIANTS)
@pytest.mark.parametrize("dilation", [1, 2])
def test_variant_names_what_the_model_file_builds(name, dilation):
    convs = spatial_convs(conv_net(name, dilation=dilation))
    variant = variant_of(name, dilation)
    separable = any(c.groups > 1 for c in convs)  # (the first block has one input channel)
    dilated = all(c.dilation == (dilation, dilation) for c in convs) and dilation > 1
    assert is_separable(variant) == is_separable(name) == separable
    assert variant == {(False, False): "standard", (False, True): "dilated",
                       (True, False): "depthwise_separable",
                       (True, True): "depthwise_dilated"}[separable, dilated]
    assert operator_of(variant) == (SEPARABLE_CONV if separable else STANDARD_CONV)


def test_other_models_are_their_own_variant_and_operator():
    assert variant_of("book_cnn", None) == "book_cnn"
    assert variant_of("tiny_net", 2) == "tiny_net"
    assert operator_of("book_cnn") == "book_cnn"
    assert operator_of(None) == "?"


@pytest.mark.parametrize(("kernel_size", "dilation"), [(3, 1), (3, 2), (5, 2), (3, 4)])
def test_effective_kernel_size_is_the_span_the_built_conv_sees(kernel_size, dilation):
    """With padding=valid a conv shrinks a 28 px image by its effective kernel size - 1."""
    model = conv_net("dilated", kernel_size, dilation, padding="valid")
    report = describe(model, (1, 28, 28))
    (first,) = [layer for layer in report.layers if layer.name == "features.0.conv"]
    assert first.output_shape[-1] == 28 - effective_kernel_size(kernel_size, dilation) + 1
