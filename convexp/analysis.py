"""What a trained net looks at, and what it costs to run: effective receptive field and latency.

* :func:`effective_receptive_field` - the ERF of Luo et al. (2016), "Understanding the Effective
  Receptive Field in Deep Convolutional Neural Networks": |d centre output / d input|, averaged
  over a batch of test images, normalised to a maximum of 1.
* :func:`inference_latency_ms` - median milliseconds per image of batched inference.

Summarising and drawing an ERF needs no torch: that is `convexp.erf_maps`, which the sweep
report (`convexp.compare`, kept free of torch) uses too.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

# ----------------------------------------------------------------------------- model helpers


def _unwrap(model: nn.Module) -> nn.Module:
    """The eager module behind a ``torch.compile`` wrapper (gradients w.r.t. the input of a
    compiled graph would recompile it for every new requires_grad pattern)."""
    return getattr(model, "_orig_mod", model)


def _device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:

    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    return device, dtype


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside, and every submodule's own ``training`` flag restored after."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Parameters with ``requires_grad=False`` inside, restored after: a pass that wants only
    the input's gradient then computes no weight gradients (autograd skips them for built-in
    ops already, but a custom autograd Function such as convexp.ops' dilated depthwise conv
    only sees which inputs require grad)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _spatial_modules() -> tuple[type, ...]:

    return (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)


def last_spatial_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last spatial feature map (N, C, h, w) the model computes from ``x``.

    ``model.features(x)`` when the model has a ``features`` module that returns a 4-D map (as
    convexp's ConvNet does: conv blocks, before the classifier); otherwise the output of the last
    ``Conv2d`` / ``MaxPool2d`` / ``AvgPool2d`` / ``LPPool2d`` called in a full forward pass (e.g.
    the textbook net's ``conv3``). Adaptive pools are not spatial: a global average pool has no
    centre.
    """
    features = getattr(model, "features", None)
    if callable(features):
        out = features(x)
        if hasattr(out, "dim") and out.dim() == 4:
            return out
    captured: list[Any] = []

    def hook(module, args, output):
        if hasattr(output, "dim") and output.dim() == 4:
            captured.append(output)

    kinds = _spatial_modules()
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    if not captured:
        raise ValueError(
            f"{type(model).__name__} has no `features` module returning a 4-D map and calls no "
            "Conv2d or pooling layer with a 4-D output: no spatial feature map to take the ERF of"
        )
    return captured[-1]


# ----------------------------------------------------------------------------- ERF


def effective_receptive_field(model: nn.Module, images: Any, *, batch_size: int = 64) -> np.ndarray:
    """The effective receptive field (Luo et al. 2016) of the centre unit of the last spatial
    feature map, as a float64 array (H, W) with maximum 1 (all zeros if no pixel gets gradient).

    For each image: the sum over channels of the feature map at its centre (h // 2, w // 2) is
    back-propagated to the input; |gradient| is summed over input channels. The result is the
    mean over ``images`` (N, C, H, W) or (N, H, W), already normalised floats as the model sees
    them (a numpy array or tensor, on any device). The model runs in eval mode (BatchNorm uses
    its running statistics, dropout is off), on the device of its parameters; its ``training``
    flags, its parameters' ``requires_grad`` and ``.grad`` are left as they were.
    """

    net = _unwrap(model)
    x_all = torch.as_tensor(images)
    if x_all.dim() == 3:
        x_all = x_all.unsqueeze(1)
    if x_all.dim() != 4 or len(x_all) == 0:
        raise ValueError(
            f"images must be (N, C, H, W) or (N, H, W), N > 0; got {tuple(x_all.shape)}"
        )
    if not x_all.is_floating_point():
        raise ValueError(
            f"images must be normalised floats as the model sees them, got {x_all.dtype}"
        )
    device, dtype = _device_and_dtype(net)
    total = torch.zeros(x_all.shape[-2:], dtype=torch.float64)
    with _eval_mode(net), _frozen(net), torch.enable_grad():
        for chunk in x_all.split(batch_size):
            x = chunk.detach().to(device=device, dtype=dtype).requires_grad_(True)
            fmap = last_spatial_map(net, x)
            # d(sum over channels of the centre)/dx, as the gradient of the whole map with a
            # one-hot weight: samples are independent in eval mode. zeros_like keeps the map's
            # memory format; `fmap[:, :, h // 2, w // 2].sum()` back-propagated a contiguous
            # gradient into a channels-last net, whose max-pool backward then took the slower
            # mixed-layout path. With _frozen, 256 test images cost 10-15% less CPU time for
            # the same ERF, bit for bit (Zen 3, 1 thread, medians of 5: depthwise_dilated
            # 209 -> 187 ms, depthwise_separable 172 -> 146, standard 187 -> 159; 2026-12-02).
            h, w = fmap.shape[-2:]
            weight = torch.zeros_like(fmap)
            weight[:, :, h // 2, w // 2] = 1
            # autograd.grad, not backward(): nothing accumulates into the parameters' .grad.
            (grad,) = torch.autograd.grad(fmap, x, weight, allow_unused=True)
            if grad is not None:
                total += grad.detach().abs().sum(dim=1).to("cpu", torch.float64).sum(dim=0)
    erf = (total / len(x_all)).numpy()
    peak = erf.max()
    return erf / peak if peak > 0 else erf


# ----------------------------------------------------------------------------- latency


def inference_latency_ms(
    model: nn.Module,
    image_shape: tuple[int, ...] = (1, 28, 28),
    device: Any = None,
    *,
    batch_size: int = 256,
    repeats: int = 3,
    warmup: int = 1,
    channels_last: bool | None = None,
    budget_s: float | None = 1.0,
) -> float:
    """Median wall-clock milliseconds per image of batched inference (eval mode, no_grad).

    One batch of ``batch_size`` random normalised images of ``image_shape`` (C, H, W) runs
    ``warmup`` times untimed, then up to ``repeats`` times timed (CUDA is synchronised around
    each); the result is the median batch time / ``batch_size``. Timing stops early, after at
    least one timed batch, once ``budget_s`` seconds have passed in all (None: no limit), so a
    large net costs about a second. ``device`` defaults to the model's (the model is not moved);
    ``channels_last`` (default: as the model's first conv weight is laid out) sets the input's
    memory format, as training used it. The model's ``training`` flags are restored after.
    """

    model_device, dtype = _device_and_dtype(_unwrap(model))
    device = torch.device(device) if device is not None else model_device
    if repeats < 1 or batch_size < 1:
        raise ValueError("repeats and batch_size must be at least 1")
    if channels_last is None:
        conv = next((m for m in _unwrap(model).modules() if isinstance(m, torch.nn.Conv2d)), None)
        channels_last = (
            conv is not None
            and conv.weight.dim() == 4
            and (
                conv.weight.is_contiguous(memory_format=torch.channels_last)
                and not conv.weight.is_contiguous()
            )
        )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((batch_size, *image_shape), generator=generator).to(device=device, dtype=dtype)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: list[float] = []
    began = time.perf_counter()
    with _eval_mode(model), torch.no_grad():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
                if budget_s is not None and time.perf_counter() - began > budget_s:
                    break
    return statistics.median(times) * 1000 / batch_size
