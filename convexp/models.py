"""The conv variants and the textbook network, built by name from the model config.

The four variants share one skeleton (blocks of conv -> norm -> activation -> pool, then a
linear classifier); only the conv operator differs. `standard` and `dilated` both use a
dense Conv2d with `dilation`, `depthwise_separable` and `depthwise_dilated` a depthwise
Conv2d with `dilation` followed by a pointwise 1x1: the names differ in their default
dilation, so one sweep over kernel_size x dilation applies to every variant.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from convexp.errors import ConfigError, ModelBuildError
from convexp.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
register_model = MODELS.register


def list_models() -> list[str]:
    return MODELS.names()


def build_model(cfg, in_channels: int = 1, image_size: int = 28, num_classes: int = 10):
    """Build the model named by `cfg.name` (a ModelConfig or any object with its fields)."""
    return MODELS.build(
        cfg.name, cfg, in_channels=in_channels, image_size=image_size, num_classes=num_classes
    )


def effective_kernel_size(kernel_size: int, dilation: int) -> int:
    return dilation * (kernel_size - 1) + 1


class SeparableConv2d(nn.Module):
    """Depthwise conv (groups=in_channels: `depth_multiplier` filters per input channel)
    followed by a pointwise 1x1 conv."""

    def __init__(self, in_channels, out_channels, kernel_size, dilation=1, padding=0, bias=True,
                 depth_multiplier=1):
        super().__init__()
        mid = in_channels * depth_multiplier
        self.depthwise = nn.Conv2d(
            in_channels, mid, kernel_size, padding=padding, dilation=dilation,
            groups=in_channels, bias=False,
        )
        self.pointwise = nn.Conv2d(mid, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


ConvFactory = Callable[..., nn.Module]


def separable_conv(in_channels, out_channels, kernel_size, dilation, padding, bias) -> nn.Module:
    # On a 1-channel image a depthwise conv with one filter would make every output channel a
    # rescaled copy of one filtered image (measured: 97.8% instead of 99% test accuracy). The
    # first block therefore uses a depth multiplier, as MobileNet-style nets use a full stem.
    multiplier = max(1, out_channels // in_channels) if in_channels <= 3 else 1
    return SeparableConv2d(in_channels, out_channels, kernel_size, dilation, padding, bias,
                           depth_multiplier=multiplier)


def dense_conv(in_channels, out_channels, kernel_size, dilation, padding, bias) -> nn.Module:
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=bias
    )


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def _value(option) -> str:
    """An enum member from the typed config, or a plain string."""
    return getattr(option, "value", option)


class ConvBlock(nn.Sequential):
    def __init__(self, conv: nn.Module, out_channels: int, norm: str, activation: str, pool: str):
        layers = {"conv": conv}
        if norm == "batch":
            layers["norm"] = nn.BatchNorm2d(out_channels)
        layers["act"] = ACTIVATIONS[activation]()
        if pool == "max":
            layers["pool"] = nn.MaxPool2d(2)
        elif pool == "avg":
            layers["pool"] = nn.AvgPool2d(2)
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)


class ConvNet(nn.Module):
    """Conv blocks, then a linear classifier whose input width is derived from the shapes."""

    def __init__(
        self, make_conv: ConvFactory, *, channels, kernel_size, dilation, padding="same",
        norm="batch", activation="relu", pool="max", head="flatten", dropout=0.0,
        in_channels=1, image_size=28, num_classes=10,
    ):
        super().__init__()
        padding, norm, activation, pool, head = map(_value, (padding, norm, activation, pool, head))
        blocks, size, c_in = [], image_size, in_channels
        k_eff = effective_kernel_size(kernel_size, dilation)
        for i, c_out in enumerate(channels):
            if padding == "valid":
                if k_eff > size:
                    raise ModelBuildError(
                        f"block features.{i} collapses the feature map: its input is "
                        f"{size}x{size} but kernel_size={kernel_size} with dilation={dilation} "
                        f"has an effective kernel size of {k_eff}. Use a smaller kernel_size or "
                        f"dilation, fewer stages in model.channels, or model.padding=same."
                    )
                size = size - k_eff + 1
            block_pool = pool if size >= 2 else "none"  # never pool a 1x1 map away
            conv = make_conv(
                c_in, c_out, kernel_size, dilation, padding, bias=norm != "batch"
            )
            blocks.append(ConvBlock(conv, c_out, norm, activation, block_pool))
            if block_pool != "none":
                size //= 2
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        if head == "avg":
            self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Eval mode: BatchNorm neither updates its statistics nor rejects a 1x1 map of one image.
        self.features.eval()
        width = _flat_width(self._features_and_pool, in_channels, image_size)
        self.features.train()
        self.classifier = nn.Linear(width, num_classes)

    def _features_and_pool(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if hasattr(self, "pool"):
            x = self.pool(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self._features_and_pool(x))
        return self.classifier(self.dropout(x))


def _flat_width(features: Callable[[torch.Tensor], torch.Tensor], in_channels, image_size) -> int:
    """The classifier's input width, from a dry run on one blank image (the textbook
    printed shapes and typed 1536 by hand). Call it with the layers in eval mode."""
    with torch.no_grad():
        out = features(torch.zeros(1, in_channels, image_size, image_size))
    return out[0].numel()


def _check_variant_fields(cfg) -> None:
    if cfg.kernel_size is None or cfg.dilation is None:
        raise ConfigError(f"model.kernel_size and model.dilation must be set for {cfg.name}")
    if not cfg.channels:
        raise ConfigError("model.channels must list at least one stage, e.g. [32, 64]")


def _variant(make_conv: ConvFactory):
    def build(cfg, in_channels=1, image_size=28, num_classes=10) -> nn.Module:
        _check_variant_fields(cfg)
        return ConvNet(
            make_conv, channels=list(cfg.channels), kernel_size=cfg.kernel_size,
            dilation=cfg.dilation, padding=cfg.padding, norm=cfg.norm, activation=cfg.activation,
            pool=cfg.pool, head=cfg.head, dropout=cfg.dropout, in_channels=in_channels,
            image_size=image_size, num_classes=num_classes,
        )

    return build


for _name, _make_conv in [
    ("standard", dense_conv),
    ("dilated", dense_conv),
    ("depthwise_separable", separable_conv),
    ("depthwise_dilated", separable_conv),
]:
    register_model(_name)(_variant(_make_conv))


def is_separable(model_name: str) -> bool:
    return model_name.startswith("depthwise")


def variant_of(model_name: str, dilation: int | None) -> str:
    """The operator a config really builds: standard with dilation 2 is the dilated net."""
    if model_name not in {"standard", "dilated", "depthwise_separable", "depthwise_dilated"}:
        return model_name
    dilated = (dilation or 1) > 1
    if is_separable(model_name):
        return "depthwise_dilated" if dilated else "depthwise_separable"
    return "dilated" if dilated else "standard"


class BookCNN(nn.Module):
    """The textbook's MNIST classifier, layer for layer."""

    def __init__(self, in_channels=1, image_size=28, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 12, kernel_size=7)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(12, 24, kernel_size=5)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(24, 6, kernel_size=3)
        self.flatten = nn.Flatten()
        width = _flat_width(
            lambda x: self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x))))),
            in_channels, image_size,
        )
        self.classifier = nn.Linear(width, num_classes)  # 1536 on 28x28, as the book has it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        return self.classifier(self.flatten(self.conv3(x)))


@register_model("book_cnn")
def book_cnn(cfg=None, in_channels=1, image_size=28, num_classes=10) -> nn.Module:
    if cfg is not None and (cfg.kernel_size is not None or cfg.dilation is not None):
        raise ConfigError(
            "book_cnn is the textbook's fixed network: model.kernel_size and model.dilation do "
            "not apply to it (leave them null). Use model=standard or model=dilated to vary them."
        )
    if image_size < 13:
        raise ModelBuildError(
            f"book_cnn needs images of at least 13x13 (its kernels 7, 5, 3), got {image_size}"
        )
    return BookCNN(in_channels, image_size, num_classes)
