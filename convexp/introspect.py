"""Model introspection: per-layer output shapes, parameters, MACs, the receptive field and
its holes in theory (input pixels inside it that no path of nonzero kernel taps reaches: the
gridding of stacked dilations, `rf_holes_theory`).

One forward pass on a single zero image, in eval mode and under ``torch.no_grad()``, runs under
``torch.utils.flop_counter.FlopCounterMode``. MACs are that counter's FLOPs / 2, so only the ops
it has formulas for count (convolution, mm/addmm/bmm, attention); ReLU, norms and pooling count 0.

A module that computes a standard layer by other means can say what it computes, so that the
report shows the layer, not the implementation (convexp.ops.DilatedDepthwiseConv2d computes a
dilated depthwise Conv2d; a sub-grid formulation of it would do more multiply-adds than the conv
it stands for):

* ``report_macs(inputs, output) -> int``: the MACs of one call (all images of its batch). They
  replace what the counter saw in the module's own ops (its children report their own), in the
  layer's row and in the total.
* ``report_type``: the type name shown in the table (default: the class name).
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convexp.analysis import last_spatial_map
from convexp.erf_maps import rf_window
from convexp.models import MNIST_SHAPE, build_model, is_builtin

# Layers after which the feature map is no longer spatial: the receptive field stops there.
_NON_SPATIAL = (nn.Flatten, nn.Linear, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class LayerInfo:
    name: str  # qualified module name, "" for the model itself
    type: str  # class name
    detail: str  # kernel / dilation / groups / stride for convs and pools, else ""
    output_shape: tuple  # per-sample, without the batch dimension
    params: int  # parameters owned directly by this module, not by its children
    macs: int  # multiply-accumulates per image done by this module's own ops


@dataclass
class ModelReport:
    layers: list[LayerInfo]  # leaf modules (and containers with own params/MACs), call order
    params: int  # trainable parameters
    macs: int  # MACs per image; equals the sum over layers
    receptive_field: int  # pixels, one side, of the last spatial feature map
    input_shape: tuple
    # Share of the pixels inside the RF that no path of nonzero taps reaches (gridding), in
    # theory (`rf_holes_theory`); None where the model has no spatial feature map.
    rf_holes_theory: float | None = None

    def format_table(self) -> str:
        header = ("name", "type", "kernel", "output", "params", "MACs")
        rows = [
            (
                layer.name or "(model)",
                layer.type,
                layer.detail,
                str(tuple(layer.output_shape)),
                f"{layer.params:,}",
                f"{layer.macs:,}",
            )
            for layer in self.layers
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

        def line(row: tuple[str, ...]) -> str:
            # Text columns align left, the two count columns right.
            cells = [
                cell.ljust(width) if i < 4 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            return "  ".join(cells).rstrip()

        rule = "-" * len(line(header))
        rf = self.receptive_field
        return "\n".join(
            [
                line(header),
                rule,
                *(line(row) for row in rows),
                rule,
                f"input              {tuple(self.input_shape)}",
                f"params             {_with_suffix(self.params)}",
                f"MACs per image     {_with_suffix(self.macs)}",
                f"receptive field    RF {rf}x{rf}",
                *([f"holes in RF        {self.rf_holes_theory:.1%} of it no path reaches "
                   "(gridding)"] if self.rf_holes_theory else []),
                "MACs: conv and linear, from torch.utils.flop_counter",
            ]
        )

    def to_dict(self) -> dict:
        """JSON-serialisable summary (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


def describe(model: nn.Module, input_shape: tuple = (1, 28, 28)) -> ModelReport:
    """Run one image through ``model`` and report its layers, parameters, MACs and RF.

    The model stays on its device and keeps each module's training flag.
    """
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper: inspect the eager model
    names = {module: name for name, module in model.named_modules()}
    layers: dict[nn.Module, LayerInfo] = {}
    leaf_calls: list[nn.Module] = []
    # One [flops at call start, flops done by child calls] pair per module being executed.
    open_calls: list[list[int]] = []
    # MACs declared by modules (report_macs) minus what the counter saw in their own ops.
    declared_minus_counted = 0
    counter = FlopCounterMode(display=False)

    def before(module, args):
        open_calls.append([counter.get_total_flops(), 0])

    def after(module, args, output):
        nonlocal declared_minus_counted
        start, in_children = open_calls.pop()
        flops = counter.get_total_flops() - start
        if open_calls:
            open_calls[-1][1] += flops
        is_leaf = next(module.children(), None) is None
        if is_leaf:
            leaf_calls.append(module)
        own_params = sum(p.numel() for p in module.parameters(recurse=False))
        own_macs = (flops - in_children) // 2
        report_macs = getattr(module, "report_macs", None)
        if callable(report_macs):
            declared = int(report_macs(args, output))
            declared_minus_counted += declared - own_macs
            own_macs = declared
        if module in layers:
            layers[module].macs += own_macs
        elif is_leaf or own_params or own_macs:
            layers[module] = LayerInfo(
                name=names[module],
                type=getattr(module, "report_type", None) or type(module).__name__,
                detail=_detail(module),
                output_shape=_shape(output),
                params=own_params,
                macs=own_macs,
            )

    first = next(iter([*model.parameters(), *model.buffers()]), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    image = torch.zeros(1, *input_shape, device=device, dtype=dtype)

    training = {module: module.training for module in model.modules()}
    handles = []
    try:
        for module in names:
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after))
        model.eval()
        with torch.no_grad(), counter:
            model(image)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.training = flag

    rf = _receptive_field(leaf_calls)
    try:
        holes = rf_holes_theory(model, input_shape, rf)
    except (ValueError, RuntimeError, TypeError):  # no spatial map, or a copy it cannot make
        holes = None
    return ModelReport(
        layers=list(layers.values()),
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=counter.get_total_flops() // 2 + declared_minus_counted,
        receptive_field=rf,
        input_shape=tuple(input_shape),
        rf_holes_theory=holes,
    )


def describe_model(model_cfg, image_shape: tuple = MNIST_SHAPE, num_classes: int = 10,
                   model: nn.Module | None = None) -> tuple[ModelReport, dict]:
    """The per-layer report of `model` (built from `model_cfg` if not given) and, for
    convexp's conv variants, its params and MACs relative to the standard conv net with the
    same channels, kernel and dilation (a ratio that means nothing for the textbook net or a
    user's model, so none is given there)."""
    model = model if model is not None else build_model(model_cfg, image_shape, num_classes)
    report = describe(model, image_shape)
    ratios = {}
    if is_builtin(model_cfg) and model_cfg.get("kernel_size") is not None:
        standard_cfg = OmegaConf.merge(model_cfg, {"name": "standard"})
        params, macs = _standard_cost(OmegaConf.to_yaml(standard_cfg, sort_keys=True),
                                      tuple(image_shape), num_classes)
        ratios = {"param_ratio_vs_standard": report.params / params,
                  "macs_ratio_vs_standard": report.macs / macs}
    return report, ratios


@functools.lru_cache(maxsize=64)
def _standard_cost(standard_yaml: str, image_shape: tuple, num_classes: int) -> tuple[int, int]:
    """Params and MACs of the standard reference net, described once per configuration in a
    process: the jobs of a sweep that differ only in seed share it."""
    standard = build_model(OmegaConf.create(standard_yaml), image_shape, num_classes)
    report = describe(standard, image_shape)
    return report.params, report.macs


def receptive_field(model: nn.Module, input_shape: tuple = (1, 28, 28)) -> int:
    return describe(model, input_shape).receptive_field


def count_macs(model: nn.Module, input_shape: tuple = (1, 28, 28)) -> int:
    return describe(model, input_shape).macs


def _receptive_field(leaf_calls: list[nn.Module]) -> int:
    """Compose kernel, dilation and stride of convs and pools (height dimension) in call order."""
    rf, jump = 1, 1
    for module in leaf_calls:
        if isinstance(module, _NON_SPATIAL):
            break
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            kernel = _first(module.kernel_size)
            dilation = _first(getattr(module, "dilation", 1))
            rf += dilation * (kernel - 1) * jump
            jump *= _first(module.stride)
    return rf


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.Dropout)


def _structural_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of `model` whose output depends on an input pixel exactly where some path
    of nonzero kernel taps joins them: every conv's and linear's nonzero weights become 1 and
    its bias 0, norms and dropout the identity, max-pools average pools (a window reaches its
    output if any of its elements does). On a positive input every value stays positive, so
    activations such as ReLU pass every path's gradient."""
    net = copy.deepcopy(getattr(model, "_orig_mod", model)).to("cpu", torch.float64).eval()
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _NORMS):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride,
                                                   child.padding, ceil_mode=child.ceil_mode))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                module.weight.copy_((module.weight != 0).to(torch.float64))
                if module.bias is not None:
                    module.bias.zero_()
    return net


def reachable_inputs(model: nn.Module, input_shape: tuple = MNIST_SHAPE) -> np.ndarray:
    """Which input pixels (H, W booleans) some path of nonzero kernel taps joins to the centre
    unit of the last spatial feature map (the unit whose ERF `convexp.analysis` takes):
    the structure alone decides, not the trained weights' values or the images."""
    net = _structural_copy(model)
    x = torch.ones(1, *input_shape, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        fmap = last_spatial_map(net, x)
        h, w = fmap.shape[-2:]
        (grad,) = torch.autograd.grad(fmap[:, :, h // 2, w // 2].sum(), x, allow_unused=True)
    if grad is None:
        return np.zeros(tuple(input_shape[-2:]), dtype=bool)
    return (grad.abs().sum(dim=(0, 1)) > 0).numpy()


def rf_holes_theory(model: nn.Module, input_shape: tuple = MNIST_SHAPE,
                    rf: int | None = None) -> float:
    """The gridding of a dilated net, in theory: the share of the input pixels inside the
    theoretical receptive field (side `rf`, placed as `erf_maps.rf_window` places it on the
    ERF, so the two counts compare) that no path of nonzero kernel taps reaches from the
    centre unit. Stacked equal dilations leave holes, rates without a common factor > 1
    (1, 2, 5: hybrid dilated convolution, Wang et al. 2018) leave none; dense nets 0."""
    reach = reachable_inputs(model, input_shape)
    rf = rf if rf is not None else receptive_field(model, input_shape)
    top, left, bottom, right = rf_window(reach.astype(np.float64), rf)
    window = reach[top:bottom + 1, left:right + 1]
    return float(1 - window.mean()) if window.size else 0.0


def _detail(module: nn.Module) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        return (
            f"k{_size(module.kernel_size)} d{_size(module.dilation)} "
            f"g{module.groups} s{_size(module.stride)}"
        )
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        detail = f"k{_size(module.kernel_size)} s{_size(module.stride)}"
        dilation = getattr(module, "dilation", 1)
        return detail if _first(dilation) == 1 else f"{detail} d{_size(dilation)}"
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return f"out {_size(module.output_size)}"
    return ""


def _shape(output) -> tuple:
    """Per-sample shape of the first tensor in a module's output."""
    if isinstance(output, torch.Tensor):
        return tuple(output.shape[1:])
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return tuple(item.shape[1:])
    return ()


def _first(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else value


def _size(value) -> str:
    """7 or (7, 7) -> "7"; (5, 3) -> "5x3"."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def _with_suffix(count: int) -> str:
    """2964528 -> "2,964,528 (2.96 M)"."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count:,} ({count / scale:.3g} {suffix})"
    return f"{count:,}"
