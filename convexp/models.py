"""The conv variants and the textbook network: each model family's fields (its schema) and its
builder, registered by name. Adding a model is a builder (and, if its fields differ, a
dataclass) registered here or in any imported module, plus `conf/model/<name>.yaml`; a model
outside convexp can also be named by `_target_` in its YAML (see README, "Your own model").

The four variants share one skeleton (blocks of conv -> norm -> activation -> pool, then a
linear classifier); only the conv operator differs. `standard` and `dilated` both use a
dense Conv2d with `dilation`, `depthwise_separable` and `depthwise_dilated` a depthwise
Conv2d with `dilation` followed by a pointwise 1x1: the names differ in their default
dilation, so one sweep over kernel_size x dilation applies to every variant. `dilation` is
one int for every block or a list of one per block (`[1, 2, 5]`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import torch
from einops.layers.torch import Rearrange
from torch import nn

from convexp.errors import ConfigError, ModelBuildError
from convexp.ops import DilatedDepthwiseConv2d
from convexp.registry import Registry
from convexp.schema import value
from convexp.variants import dilation_schedule, effective_kernel_size

MODELS: Registry[nn.Module] = Registry("model")
register_model = MODELS.register

MNIST_SHAPE = (1, 28, 28)


def list_models() -> list[str]:
    return MODELS.names()


def import_builder(target: str) -> Callable[..., nn.Module]:
    """The builder a model config's `_target_` names (`module.function`, or `module.Class`),
    imported in the process that builds the model: the main one, a joblib worker, a submitit
    job. Its module must be importable there: installed, or its directory on PYTHONPATH, which
    every launcher's workers inherit. An error inside the module itself (a SyntaxError, ...)
    keeps its traceback."""
    where = f"model._target_={target!r}"
    module_name, _, attr = str(target).rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"{where} is not a dotted path to a function, e.g. my_models.tiny_net")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        missing = getattr(e, "name", None)
        if isinstance(e, ModuleNotFoundError) and missing and (
                module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigError(
                f"{where} cannot be imported: no module named {missing!r} on this process's "
                "path. Put the directory that holds it on PYTHONPATH (e.g. "
                "PYTHONPATH=examples), which every launcher's workers inherit, or install "
                "it") from None
        raise ConfigError(f"{where} cannot be imported: importing {module_name!r} failed: "
                          f"{type(e).__name__}: {e}") from None
    builder = getattr(module, attr, None)
    if builder is None:
        where_from = getattr(module, "__file__", None) or module_name
        raise ConfigError(f"{where}: module {module_name!r} ({where_from}) has no {attr!r}")
    check_builder(builder, where)
    return builder


BUILDER_SIGNATURE = "def NAME(cfg, image_shape=(1, 28, 28), num_classes=10) -> nn.Module"


def check_builder(builder, where: str) -> None:
    """A model builder is a Python function (or an nn.Module class) that takes a registered
    builder's arguments: anything else a `_target_` names (`os.system`, a builtin, a class
    that runs something) is refused before it is called."""
    is_module_class = inspect.isclass(builder) and issubclass(builder, nn.Module)
    if not (inspect.isfunction(builder) or is_module_class):
        kind = "class" if inspect.isclass(builder) else type(builder).__name__
        raise ConfigError(f"{where} is a {kind}, not a Python function; a model builder is "
                          f"{BUILDER_SIGNATURE}")
    try:
        inspect.signature(builder).bind(None, image_shape=MNIST_SHAPE, num_classes=10)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where} does not take a model builder's arguments ({e}); a model "
                          f"builder is {BUILDER_SIGNATURE}") from None


def build_model(cfg, image_shape: tuple[int, int, int] = MNIST_SHAPE, num_classes: int = 10):
    """Build the model of a model config: the builder its `_target_` names (a dotted path to a
    function with a registered builder's signature), else the one registered as `cfg.name`."""
    target = cfg.get("_target_") if hasattr(cfg, "get") else None
    if target is not None:
        builder = import_builder(target)
        model = builder(cfg, image_shape=tuple(image_shape), num_classes=num_classes)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model._target_={target!r} returned {type(model).__name__}, "
                              "not a torch.nn.Module")
        return model
    return MODELS.build(cfg.name, cfg, image_shape=tuple(image_shape), num_classes=num_classes)


def is_builtin(cfg) -> bool:
    """A model convexp registered itself (not one named by `_target_`)."""
    return (not hasattr(cfg, "get") or cfg.get("_target_") is None) and cfg.name in MODELS


class SeparableConv2d(nn.Module):
    """Depthwise conv (groups=in_channels: `depth_multiplier` filters per input channel)
    followed by a pointwise 1x1 conv."""

    def __init__(self, in_channels, out_channels, kernel_size, dilation=1, padding=0, bias=True,
                 depth_multiplier=1):
        super().__init__()
        # An nn.Conv2d (same parameters, state-dict keys and forward) whose backward is faster
        # on the CPU when dilated: oneDNN's dilated depthwise backward kernels are slow; this
        # layer's forward + backward went from 3.6 to 1.2 ms with dilation 2 (convexp/ops.py).
        mid = in_channels * depth_multiplier
        self.depthwise = DilatedDepthwiseConv2d(
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
        image_shape=MNIST_SHAPE, num_classes=10,
    ):
        super().__init__()
        padding, norm, activation, pool, head = map(value, (padding, norm, activation, pool, head))
        in_channels, height, width = image_shape
        blocks, c_in = [], in_channels
        dilations = dilation_schedule(dilation, len(channels))  # an int, or one per block
        if len(dilations) != len(channels) or min(dilations) < 1:
            raise ConfigError(f"model.dilation={dilations} must list one dilation >= 1 per "
                              f"block ({len(channels)} in model.channels={list(channels)})")
        for i, (c_out, d) in enumerate(zip(channels, dilations, strict=True)):
            if padding == "valid":
                k_eff = effective_kernel_size(kernel_size, d)
                if k_eff > min(height, width):
                    raise ModelBuildError(
                        f"block features.{i} collapses the feature map: its input is "
                        f"{height}x{width} but kernel_size={kernel_size} with "
                        f"dilation={d} has an effective kernel size of {k_eff}. Use a "
                        f"smaller kernel_size or dilation, fewer stages in model.channels, or "
                        f"model.padding=same."
                    )
                height, width = height - k_eff + 1, width - k_eff + 1
            block_pool = pool if min(height, width) >= 2 else "none"  # never pool 1 px away
            conv = make_conv(c_in, c_out, kernel_size, d, padding, bias=norm != "batch")
            blocks.append(ConvBlock(conv, c_out, norm, activation, block_pool))
            if block_pool != "none":
                height, width = height // 2, width // 2
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        if head == "avg":
            self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Eval mode: BatchNorm neither updates its statistics nor rejects a 1x1 map of one image.
        self.features.eval()
        width = _flat_width(self._features_and_pool, image_shape)
        self.features.train()
        self.classifier = nn.Linear(width, num_classes)

    def _features_and_pool(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if hasattr(self, "pool"):
            x = self.pool(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._features_and_pool(x)
        if FLATTEN_GRAD_IN_INPUT_LAYOUT:
            _grad_in_layout_of(x)
        return self.classifier(self.dropout(self.flatten(x)))


# Flattening a channels-last map copies it into (c h w) order, and autograd hands the last
# pool's backward a contiguous gradient for its channels-last input: oneDNN then takes a
# mixed-layout path, 10.5 ms CPU per step against 4.6-5.7 ms for block 1's pool backward over
# as many elements (Zen 3, benchmarks/README.md). Reordering the gradient first is one small
# copy. The classifier's weights keep their (c h w) meaning in either layout.
FLATTEN_GRAD_IN_INPUT_LAYOUT = True


def _grad_in_layout_of(x: torch.Tensor) -> None:
    if (x.requires_grad and x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
            and not torch.compiler.is_compiling()):  # inductor picks its own layouts
        x.register_hook(lambda g: g.contiguous(memory_format=torch.channels_last))


def _flat_width(features: Callable[[torch.Tensor], torch.Tensor], image_shape) -> int:
    """The classifier's input width, from a dry run on one blank image (the textbook
    printed shapes and typed 1536 by hand). Call it with the layers in eval mode."""
    with torch.no_grad():
        out = features(torch.zeros(1, *image_shape))
    return out[0].numel()


def _variant(make_conv: ConvFactory):
    def build(cfg, image_shape=MNIST_SHAPE, num_classes=10) -> nn.Module:
        if not cfg.channels:
            raise ConfigError("model.channels must list at least one stage, e.g. [32, 64]")
        return ConvNet(
            make_conv, channels=list(cfg.channels), kernel_size=cfg.kernel_size,
            dilation=cfg.dilation, padding=cfg.padding, norm=cfg.norm, activation=cfg.activation,
            pool=cfg.pool, head=cfg.head, dropout=cfg.dropout, image_shape=image_shape,
            num_classes=num_classes,
        )

    return build


for _name, _make_conv in [
    ("standard", dense_conv),
    ("dilated", dense_conv),
    ("depthwise_separable", separable_conv),
    ("depthwise_dilated", separable_conv),
]:
    register_model(_name)(_variant(_make_conv))


class BookCNN(nn.Module):
    """The textbook's MNIST classifier, layer for layer."""

    def __init__(self, image_shape=MNIST_SHAPE, num_classes=10):
        super().__init__()
        in_channels = image_shape[0]
        self.conv1 = nn.Conv2d(in_channels, 12, kernel_size=7)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(12, 24, kernel_size=5)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(24, 6, kernel_size=3)
        self.flatten = Rearrange("b c h w -> b (c h w)")  # the textbook flattens with einops
        width = _flat_width(
            lambda x: self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x))))),
            image_shape,
        )
        self.classifier = nn.Linear(width, num_classes)  # 1536 on 28x28, as the book has it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        return self.classifier(self.flatten(self.conv3(x)))


@register_model("book_cnn")
def book_cnn(cfg=None, image_shape=MNIST_SHAPE, num_classes=10) -> nn.Module:
    if min(image_shape[1:]) < 13:
        raise ModelBuildError("book_cnn needs images of at least 13x13 (its kernels 7, 5, 3), "
                              f"got {image_shape[1]}x{image_shape[2]}")
    return BookCNN(tuple(image_shape), num_classes)
