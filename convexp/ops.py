"""A faster backward pass for dilated depthwise convolutions on the CPU.

oneDNN (PyTorch's CPU conv backend) runs the *forward* of a dilated depthwise conv about as fast
as an undilated one, but its *backward* kernels for dilated depthwise convs are slow. Measured
per kernel on `depthwise_dilated`'s second block (32 channels at 14x14, k3, batch 128,
channels-last, one thread; AMD EPYC Zen 4, torch 2.14.1, 2026-11-26, on a busy machine):

    forward          0.66 ms with dilation 2, 1.09 ms undilated
    input gradient   12.4 ms with dilation 2, 1.22 ms undilated
    weight gradient  10.0 ms with dilation 2, 1.05 ms undilated

`DilatedDepthwiseConv2d` keeps the native forward (bit-identical to `nn.Conv2d`) where oneDNN
has a fast kernel for it, and computes the two gradients with fast kernels instead:

* the input gradient of a stride-1 conv is a conv of the output gradient with the flipped
  kernel, same dilation: a dilated depthwise *forward*, which is fast (1.15 ms above);
* the weight gradient by space-to-batch: the dilation's interleaved sub-grids of the input and
  of the output gradient are moved apart (one copy each), where the dilated conv is an
  undilated one, whose weight-gradient kernel is fast (1.9 ms, copies included, against 8.1
  ms native and 0.86 ms undilated in one run).

The forward itself is fast only while the padding is at most 4 (MAX_NATIVE_DILATED_PADDING);
with more (k5 d3, k7 d2 with 'same' padding) oneDNN runs it, and the input gradient's conv, as
an im2col gemm, and there both are computed on the sub-grids too (`depthwise_forward`), with or
without gradients: equal to `nn.Conv2d` to float rounding, not bit for bit. Below that padding
the native forward is kept: it is fast, and the sub-grids would add two copies per step.

The layer alone, forward + backward (medians of 15 alternating rounds, 2 threads, load ~2):
3.57 -> 1.16 ms with dilation 2 and 3.62 -> 3.06 ms with dilation 3 (14 is not a multiple of 3:
zero-padded sub-grids; 1.7x in another run), against 0.70 ms undilated; with one thread 7.29 ->
2.39 and 7.48 -> 3.17 ms, against 1.39 ms. A whole training step of `depthwise_dilated` under
convexp's runner got 4-10% faster (benchmarks/README.md), less than the layer's gain suggests:
on this machine most of that model's gap to `depthwise_separable` is not in this layer.

The module is a subclass of `nn.Conv2d`: same attributes, parameters and state-dict keys, so
checkpoints load both ways, and `convexp.introspect` reports it as the Conv2d it computes. The
fast backward is used on the CPU only: no GPU was available to measure it (cuDNN has its own
dilated depthwise kernels, and nothing here shows they need help). On other devices, in
torch.export/ONNX/TorchScript tracing, and for configurations where oneDNN's dilated backward
is not slow (see `fast_path_applies`), the module is exactly `nn.Conv2d`; without gradients it
is too, but for the sub-grid forward past MAX_NATIVE_DILATED_PADDING.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DilatedDepthwiseConv2d", "dilated_depthwise_conv2d"]

_conv_backward = torch.ops.aten.convolution_backward


class DilatedDepthwiseConv2d(nn.Conv2d):
    """`nn.Conv2d` for depthwise convs (groups == in_channels, out_channels a multiple of it),
    with a faster backward pass on the CPU when the conv is dilated (see the module docstring).
    Any other configuration (stride > 1, non-zero padding modes, no dilation, a depth
    multiplier, other devices) runs `nn.Conv2d.forward` unchanged."""

    # convexp.introspect reports the layer this module computes, whatever its implementation:
    # a Conv2d (its kernel, dilation and groups are in the report's detail column) with the
    # MACs of the plain dilated conv.
    report_type = "Conv2d"

    def report_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        """C_out * H_out * W_out * (C_in / groups) * kh * kw per image, over the batch."""
        kh, kw = self.kernel_size
        return output.numel() * (self.in_channels // self.groups) * kh * kw

    def fast_path_applies(self, x: torch.Tensor) -> bool:
        return (
            self._depthwise_dilated_on_cpu(x)
            and torch.is_grad_enabled()
            and (x.requires_grad or self.weight.requires_grad)
        )

    def _depthwise_dilated_on_cpu(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dim() == 4
            # One input and one output channel per group: oneDNN's depthwise kernels, whose
            # dilated backward is slow. With a depth multiplier, oneDNN runs a grouped (or, on
            # one input channel, a dense) conv whose backward is not slowed by dilation:
            # convexp's first block (1 -> 32 channels, 28x28) took 3.8 ms forward + backward
            # with dilation 2 and without. The functions here made such layers slower (0.6x
            # for 1 -> 32, 0.8x for 3 -> 6 and 16 -> 32 channels), so they keep nn.Conv2d's.
            and self.groups == self.in_channels == self.out_channels > 1
            and self.dilation != (1, 1)
            and self.stride == (1, 1)
            and self.padding_mode == "zeros"
            and not _tracing_for_export()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast_path_applies(x):
            return dilated_depthwise_conv2d(x, self.weight, self.bias, self.padding,
                                            self.dilation)
        if self._depthwise_dilated_on_cpu(x):  # without gradients (evaluation): the forward
            return depthwise_forward(x, self.weight, self.bias, self.padding, self.dilation,
                                     self.groups)
        return super().forward(x)


def dilated_depthwise_conv2d(x, weight, bias, padding, dilation) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, 1, padding, dilation, groups=x.shape[1])` with the backward
    pass of this module. `padding` is 'same', 'valid', an int or a pair of ints."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        # Autocast casts conv2d's inputs to its lower precision; do the same here, then run the
        # function without autocast so that forward and backward see one dtype.
        dtype = torch.get_autocast_dtype(device)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(device, enabled=False):
            return _DilatedDepthwiseConv2dFn.apply(x, weight, bias, padding, _pair(dilation))
    return _DilatedDepthwiseConv2dFn.apply(x, weight, bias, padding, _pair(dilation))


class _DilatedDepthwiseConv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation, ctx.has_bias = padding, dilation, bias is not None
        return depthwise_forward(x, weight, bias, padding, dilation, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        kernel = tuple(weight.shape[-2:])
        pads = tuple(
            _pad_pair(ctx.padding, i, kernel[i], ctx.dilation[i]) for i in range(2)
        )
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _input_grad(grad, weight, x.shape[1], pads, ctx.dilation)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(grad, x, weight, pads, ctx.dilation)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


def _input_grad(grad, weight, channels, pads, dilation) -> torch.Tensor:
    """d(loss)/dx of a stride-1 grouped conv: the output gradient convolved with the flipped
    kernel (each group's m output channels become its m input channels), same dilation, with
    padding dilation*(k-1) - the forward's padding on each side. A dilated *forward* depthwise
    conv is one of oneDNN's fast kernels; its dilated input-gradient kernel is not."""
    k = weight.shape[-2:]
    flipped = weight.reshape(channels, -1, *k).flip(2, 3)
    # (front, back) padding of the gradient conv, per dimension; negative values crop.
    (top, bottom), (left, right) = (
        (dilation[i] * (k[i] - 1) - pads[i][0], dilation[i] * (k[i] - 1) - pads[i][1])
        for i in range(2)
    )
    if top == bottom >= 0 and left == right >= 0:
        return depthwise_forward(grad, flipped, None, (top, left), dilation, channels)
    grad = F.pad(grad, (left, right, top, bottom))
    return depthwise_forward(grad, flipped, None, 0, dilation, channels)


# oneDNN's jit depthwise kernel takes a dilated depthwise conv only while its padding is at
# most 4 on every side; with more it falls back to its gemm (im2col) convolution. Measured with
# ONEDNN_VERBOSE (AMD EPYC Zen 3, AVX2, torch 2.14.1, 2026-12-02): jit_dw for k3 d4, k5 d2, k5
# d3 and k7 d4 at padding <= 4 ('valid' included), gemm at padding 5 and more (k3 d5, k5 d3 and
# k7 d2 'same': padding 6), on 14x14 and 28x28 maps alike; undilated kernels of any padding
# take brdgmm_dw. The gemm forward made depthwise_dilated k5 d3 and k7 d2/d3 train at
# 0.29-0.47x of depthwise_separable in experiment=kernel_dilation_sweep (benchmarks/README.md).
# There the conv is computed on the dilation's sub-grids, where it is an undilated one with
# padding at most (k - 1) / 2. The limit was measured on AVX2 only; elsewhere the sub-grid
# conv is as correct, if perhaps not needed.
MAX_NATIVE_DILATED_PADDING = 4


def depthwise_forward(x, weight, bias, padding, dilation, groups) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, 1, padding, dilation, groups)` for a dilated grouped conv with
    one input channel per group (depthwise, or the input gradient of one): oneDNN's own kernel,
    or the sub-grid conv where oneDNN would fall back to gemm (MAX_NATIVE_DILATED_PADDING).
    The two agree to float rounding (the sums run in another order)."""
    k = weight.shape[-2:]
    if not sub_grid_forward_applies(k, dilation, padding):
        return F.conv2d(x, weight, bias, 1, padding, dilation, groups)
    pads = tuple(_pad_pair(padding, i, k[i], dilation[i]) for i in range(2))
    return _sub_grid_conv(x, weight, bias, pads, dilation, groups)


def sub_grid_forward_applies(kernel, dilation, padding) -> bool:
    """Whether `depthwise_forward` runs this dilated conv on sub-grids (its padding is past
    MAX_NATIVE_DILATED_PADDING) rather than as oneDNN's own, bit-identical to nn.Conv2d."""
    kernel, dilation = _pair(kernel), _pair(dilation)
    pads = [_pad_pair(padding, i, kernel[i], dilation[i]) for i in range(2)]
    return dilation != (1, 1) and max(max(pair) for pair in pads) > MAX_NATIVE_DILATED_PADDING


def _sub_grid_conv(x, weight, bias, pads, dilation, groups) -> torch.Tensor:
    """The stride-1 dilated grouped conv computed on the dilation's sub-grids (space-to-batch):
    output row y = a + d*q reads input rows a + d*(q + i) - pad, i.e. sub-grid a of the padded
    input, where the kernel is undilated (see _weight_grad). One copy in (_fold), an undilated
    conv with the kernel repeated per column sub-grid, one copy out (_unfold)."""
    k = weight.shape[-2:]
    out_size = [x.shape[2 + i] + sum(pads[i]) - dilation[i] * (k[i] - 1) for i in range(2)]
    (lg_h, lx_h, p_h, r_h), (lg_w, lx_w, p_w, r_w) = (
        _sub_grid_geometry(x.shape[2 + i], out_size[i], k[i], dilation[i], *pads[i])
        for i in range(2)
    )
    dw = dilation[1]
    x_sub = _fold(x, dilation, (r_h, r_w), (lx_h, lx_w))
    repeated = weight.repeat(dw, 1, 1, 1) if dw > 1 else weight
    bias = bias.repeat(dw) if bias is not None and dw > 1 else bias
    y_sub = F.conv2d(x_sub, repeated, bias, 1, (p_h, p_w), 1, dw * groups)
    y = _unfold(y_sub, dilation, x.shape[0], out_size)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return y.contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _unfold(t, dilation, n, size) -> torch.Tensor:
    """(dh*N, dw*C, Lh, Lw) -> (N, C, H, W), H, W = size: the inverse of _fold without shift,
    cropped; element [n, c, a + dh*i, b + dw*j] is t[a*N + n, b*C + c, i, j]."""
    (dh, dw), (h, w) = dilation, size
    _, channels, lh, lw = t.shape
    c = channels // dw
    t = t.permute(0, 2, 3, 1).reshape(dh, n, lh, lw, dw, c)  # NHWC: a view for channels-last
    t = t.permute(1, 2, 0, 3, 4, 5).reshape(n, lh * dh, lw * dw, c)  # rows (i, a), cols (j, b)
    return t[:, :h, :w].permute(0, 3, 1, 2)


def _weight_grad(grad, x, weight, pads, dilation) -> torch.Tensor:
    """The weight gradient with the dilation's sub-grids folded out (space-to-batch).

    With output row y = a + d*q (sub-grid a, 0 <= a < d), the conv reads the padded input at
    rows y + d*i = a + d*(q + i): sub-grid a of the output gradient only meets sub-grid a of
    the padded input, and there the dilated kernel is an undilated one; the same holds for
    columns. So the weight gradient is that of an undilated conv once the sub-grids are apart:
    the row sub-grids go into the batch and the column sub-grids into the channels (a grouped
    conv with the kernel repeated per column sub-grid, whose gradients are summed). Folding
    both into the batch (the textbook space-to-batch) copies runs of C floats; this layout
    copies whole rows of channels-last memory, and was 2.2x faster for the weight gradient of
    depthwise_dilated's second block (1.9 against 4.3 ms, one thread, on a busy machine).

    The conv's padding is split into whole sub-grid rows (given to the undilated conv as its
    padding: no copy) and a remainder that shifts the input's rows on the sub-grids."""
    k = weight.shape[-2:]
    channels, dw = x.shape[1], dilation[1]
    geometry = [
        _wide_enough(*_sub_grid_geometry(x.shape[2 + i], grad.shape[2 + i], k[i], dilation[i],
                                         *pads[i]), k[i], dilation[i])
        for i in range(2)
    ]
    (lg_h, lx_h, p_h, r_h), (lg_w, lx_w, p_w, r_w) = geometry
    grad_sub = _fold(grad, dilation, (0, 0), (lg_h, lg_w))
    x_sub = _fold(x, dilation, (r_h, r_w), (lx_h, lx_w))
    repeated = weight.repeat(dw, 1, 1, 1) if dw > 1 else weight
    folded = _conv_backward(
        grad_sub, x_sub, repeated, None, (1, 1), (p_h, p_w), (1, 1), False, (0, 0),
        dw * channels, (False, True, False),
    )[1]
    if dw == 1:
        return folded
    # Sum the column sub-grids' gradients in at least fp32 (they are bf16 under autocast).
    acc = torch.promote_types(weight.dtype, torch.float32)
    return folded.view(dw, *weight.shape).sum(0, dtype=acc).to(weight.dtype)


def _sub_grid_geometry(size, out_size, k, d, pad_front, pad_back):
    """Sub-grid lengths of the output gradient (lg) and of the input (lx), the undilated conv's
    padding p, and the input's shift r (padding not covered by whole sub-grid rows)."""
    lg = -(-out_size // d)  # output gradient zero-filled to a multiple of d
    # The undilated conv sees p zero rows on each side of the input's sub-grids: at most
    # pad_front // d at the front, and at the back only where the input's own rows have ended.
    for p in range(pad_front // d, -1, -1):
        r = pad_front - d * p
        lx = lg + k - 1 - 2 * p
        if d * lx - r - size >= 0:
            return lg, lx, p, r
    raise AssertionError("unreachable: p = 0 always fits")  # pragma: no cover


def _wide_enough(lg, lx, p, r, k, d):
    """The geometry with the input's sub-grids at least k long: oneDNN's depthwise weight-
    gradient kernel takes no input smaller than the kernel, and falls back to gemm (k7 d3 on
    14x14: 5x5 sub-grids, 230 against 34 ms with them zero-filled to 11x11, one thread, busy
    machine, AMD EPYC Zen 3, 2026-12-02). The zeros come from the fold (a shift of whole
    sub-grid rows) instead of the conv's padding."""
    if lx >= k:
        return lg, lx, p, r
    e = -(-(k - lx) // 2)  # at most p: lx = lg + k - 1 - 2p with lg >= 1
    return lg, lx + 2 * e, p - e, r + d * e


def _fold(t, dilation, shift, lengths) -> torch.Tensor:
    """(N, C, H, W) -> (dh*N, dw*C, Lh, Lw) in channels-last memory, where element
    [a*N + n, b*C + c, i, j] is t[n, c, a + dh*i - shift_h, b + dw*j - shift_w] (zero outside
    t): row sub-grid a in the batch, column sub-grid b in the channels."""
    (dh, dw), (sh, sw), (lh, lw) = dilation, shift, lengths
    n, c, h, w = t.shape
    t = t.permute(0, 2, 3, 1)  # NHWC: a view for channels-last tensors
    if (sh, sw) == (0, 0) and (h, w) == (dh * lh, dw * lw):
        # The common case ('same' padding, sizes divisible by d): NHWC rows (i, a) -> (a, i),
        # whole rows of Lw*dw*C floats moved by one copy.
        out = t.reshape(n, lh, dh, lw * dw * c).permute(2, 0, 1, 3)
        return out.reshape(dh * n, lh, lw, dw * c).permute(0, 3, 1, 2)
    # Otherwise a zeroed buffer, and each row sub-grid's rows copied in at their column offset
    # (a padded row of the sub-grids, (j, b, c), holds the source row's w*c floats at sw*c).
    # With dilation 3 on 14x14 this took 0.83 ms for the weight gradient against 1.13 ms for
    # zero-padding the input first (F.pad) and then one copy as above.
    out = t.new_zeros(dh, n, lh, lw * dw * c)
    cols = min(w, dw * lw - sw)
    for a in range(dh):
        rows = _phase(a, sh, dh, h, lh)
        if rows and cols > 0:
            i0, y0, ny = rows
            out[a, :, i0:i0 + ny, sw * c:(sw + cols) * c] = (
                t[:, y0:y0 + dh * ny:dh, :cols].reshape(n, ny, cols * c))
    return out.view(dh * n, lh, lw, dw * c).permute(0, 3, 1, 2)


def _phase(a, shift, d, size, length):
    """Sub-grid a's first index i0 holding data, that data's first source index and count."""
    first = a - shift  # source index of sub-grid element 0
    i0 = max(0, -(first // d))  # first i with first + d*i >= 0
    y0 = first + d * i0
    count = min(length - i0, -(-(size - y0) // d))
    return (i0, y0, count) if count > 0 else None


def _pad_pair(padding, dim, kernel, dilation) -> tuple[int, int]:
    """(front, back) zero padding of one spatial dimension, as F.conv2d applies it."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        total = dilation * (kernel - 1)
        return total // 2, total - total // 2
    p = padding[dim] if isinstance(padding, (tuple, list)) else padding
    return p, p


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _tracing_for_export() -> bool:
    """torch.export (used by torch.onnx.export(dynamo=True)), TorchScript or ONNX tracing: the
    graph should hold the plain dilated Conv, which ONNX has natively."""
    return (
        torch.compiler.is_exporting()
        or torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
    )
