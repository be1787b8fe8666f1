"""convexp.ops.DilatedDepthwiseConv2d: the same outputs and gradients as nn.Conv2d (its forward
is nn.Conv2d's up to MAX_NATIVE_DILATED_PADDING and computed on sub-grids past it; its backward
on the CPU is computed differently), the same module to
checkpoints, the per-layer report and ONNX export, and the fast path taken exactly when it
applies."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import convexp.ops
from convexp.introspect import describe
from convexp.ops import (
    DilatedDepthwiseConv2d,
    dilated_depthwise_conv2d,
    sub_grid_forward_applies,
)

FAST_GRAD_FN = "_DilatedDepthwiseConv2dFnBackward"


def _pair_of_convs(channels, kernel, dilation, padding, multiplier=1, bias=True, seed=0):
    """A plain nn.Conv2d and a DilatedDepthwiseConv2d holding the same weights."""
    torch.manual_seed(seed)
    plain = nn.Conv2d(channels, channels * multiplier, kernel, padding=padding,
                      dilation=dilation, groups=channels, bias=bias)
    fast = DilatedDepthwiseConv2d(channels, channels * multiplier, kernel, padding=padding,
                                  dilation=dilation, groups=channels, bias=bias)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def _run(conv, x, grad, channels_last):
    """Output and (input, weight, bias) gradients of conv on x."""
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
    x = x.detach().clone().requires_grad_()
    conv.zero_grad(set_to_none=True)
    out = conv(x)
    out.backward(grad)
    grads = [x.grad, conv.weight.grad, conv.bias.grad if conv.bias is not None else None]
    return out, grads, out.grad_fn


def _assert_same(a, b, scale=1.0, rtol=1e-4, atol=1e-4):
    torch.testing.assert_close(a.float(), b.float(), rtol=rtol, atol=atol * scale)


def _assert_forward_matches(out, want, kernel, dilation, padding):
    if not sub_grid_forward_applies(kernel, dilation, padding):
        assert torch.equal(out, want)  # the forward is nn.Conv2d's own
    else:
        _assert_same(out, want, scale=want.abs().max().item(), rtol=1e-5, atol=1e-5)


def _input(batch, channels, height, width, channels_last, seed=1):
    x = torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# Kernel 3, 5, 7 x dilation 2, 3, 4 x padding same / valid / an integer, on sizes that are odd,
# even, and not multiples of the dilation (and 20x20, 24x24: multiples of some), in both memory
# layouts, batch 1 and 3. Sizes are large enough for 'valid' with k7 d4 (span 25).
SIZES = [(27, 26), (29, 31), (28, 28)]
CASES = [
    (k, d, padding, size, channels_last, batch)
    for k, d, padding, size, channels_last, batch in itertools.product(
        (3, 5, 7), (2, 3, 4), ("same", "valid", 2), SIZES, (True, False), (1, 3))
    # Trim the grid: every value of every axis still meets every other in some case.
    if (k + d + SIZES.index(size) + channels_last + batch) % 2 == 0
]


@pytest.mark.parametrize(("kernel", "dilation", "padding", "size", "channels_last", "batch"),
                         CASES)
def test_outputs_and_gradients_match_conv2d(kernel, dilation, padding, size, channels_last,
                                            batch):
    channels = 4
    plain, fast = _pair_of_convs(channels, kernel, dilation, padding)
    x = _input(batch, channels, *size, channels_last)
    out_plain = plain(x)
    grad = torch.randn(out_plain.shape, generator=torch.Generator().manual_seed(2))

    out_p, grads_p, _ = _run(plain, x, grad, channels_last)
    out_f, grads_f, grad_fn = _run(fast, x, grad, channels_last)

    assert type(grad_fn).__name__ == FAST_GRAD_FN  # the fast path was taken
    assert out_f.shape == out_p.shape
    _assert_forward_matches(out_f, out_p, kernel, dilation, padding)
    if channels_last:
        assert out_f.is_contiguous(memory_format=torch.channels_last)
    for got, want in zip(grads_f, grads_p, strict=True):
        assert got.shape == want.shape
        _assert_same(got, want, scale=want.abs().max().item())


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(("channels", "multiplier"), [(1, 32), (1, 4), (3, 2), (4, 3)])
@pytest.mark.parametrize(("kernel", "dilation", "padding", "size"), [
    (3, 2, "same", (28, 28)), (5, 3, "same", (14, 13)), (7, 4, "valid", (27, 26)),
    (3, 3, 1, (13, 14)),
])
def test_depth_multiplier(channels, multiplier, kernel, dilation, padding, size, channels_last):
    """out_channels = multiplier * in_channels (convexp's first block: 1 -> 32). The module
    keeps nn.Conv2d's backward there (measured faster); the function handles it too."""
    plain, fast = _pair_of_convs(channels, kernel, dilation, padding, multiplier)
    x = _input(2, channels, *size, channels_last)
    grad = torch.randn(plain(x).shape, generator=torch.Generator().manual_seed(2))
    out_p, grads_p, _ = _run(plain, x, grad, channels_last)
    out_f, grads_f, grad_fn = _run(fast, x, grad, channels_last)
    assert type(grad_fn).__name__ != FAST_GRAD_FN
    assert torch.equal(out_f, out_p)

    # The function itself, forced onto the same input.
    weight = plain.weight.detach().clone().requires_grad_()
    bias = plain.bias.detach().clone().requires_grad_()
    x_f = x.detach().clone().requires_grad_()
    out = dilated_depthwise_conv2d(x_f, weight, bias, plain.padding, plain.dilation)
    assert type(out.grad_fn).__name__ == FAST_GRAD_FN
    out.backward(grad)
    _assert_forward_matches(out, out_p, kernel, dilation, padding)
    for got, want in zip((x_f.grad, weight.grad, bias.grad), grads_p, strict=True):
        _assert_same(got, want, scale=want.abs().max().item())


@pytest.mark.parametrize(("kernel", "dilation", "sub_grids"), [
    (3, 2, False), (5, 2, False), (3, 4, False), (5, 3, True), (7, 2, True), (7, 3, True),
    (3, 5, True),
])
def test_a_padding_past_onednns_fast_kernel_runs_on_sub_grids(kernel, dilation, sub_grids,
                                                              monkeypatch):
    """'same' padding above MAX_NATIVE_DILATED_PADDING (oneDNN's gemm fallback): the forward
    and the input gradient's conv run on the sub-grids, with gradients and without (the
    evaluation passes); below it oneDNN's kernel runs. Equal to nn.Conv2d either way."""
    calls = []
    sub_grid_conv = convexp.ops._sub_grid_conv
    monkeypatch.setattr(convexp.ops, "_sub_grid_conv",
                        lambda *a: calls.append(a[0].shape) or sub_grid_conv(*a))
    plain, fast = _pair_of_convs(8, kernel, dilation, "same")
    x = _input(3, 8, 14, 14, True)
    grad = torch.randn(3, 8, 14, 14, generator=torch.Generator().manual_seed(2))
    out_p, grads_p, _ = _run(plain, x, grad, True)
    out_f, grads_f, _ = _run(fast, x, grad, True)
    assert len(calls) == (2 if sub_grids else 0)  # the forward, the input gradient
    _assert_same(out_f, out_p, scale=out_p.abs().max().item(), rtol=1e-5, atol=1e-5)
    for got, want in zip(grads_f, grads_p, strict=True):
        _assert_same(got, want, scale=want.abs().max().item())
    with torch.no_grad():
        evaluated = fast.eval()(x)
    assert len(calls) == (3 if sub_grids else 0)
    _assert_same(evaluated, out_p, scale=out_p.abs().max().item(), rtol=1e-5, atol=1e-5)
    assert evaluated.is_contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(convexp.ops, "_tracing_for_export", lambda: True)
    with torch.no_grad():
        assert torch.equal(fast(x), plain.eval()(x))  # an export holds the plain conv
    assert len(calls) == (3 if sub_grids else 0)


def test_the_default_depthwise_dilated_shapes_exactly_in_float64():
    """The second block of convexp's default depthwise_dilated net (32 channels at 14x14, k3),
    d = 2 and 3, in float64 (batch 16: oneDNN has no float64 kernels, the fallback is slow):
    the sums agree to rounding."""
    for dilation in (2, 3):
        plain, fast = _pair_of_convs(32, 3, dilation, "same", bias=False)
        plain, fast = plain.double(), fast.double()
        x = _input(16, 32, 14, 14, True).double()
        grad = torch.randn(16, 32, 14, 14, dtype=torch.float64).contiguous(
            memory_format=torch.channels_last)
        out_p, grads_p, _ = _run(plain, x, grad, True)
        out_f, grads_f, grad_fn = _run(fast, x, grad, True)
        assert type(grad_fn).__name__ == FAST_GRAD_FN
        assert torch.equal(out_f, out_p)
        for got, want in zip(grads_f[:2], grads_p[:2], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("kernel", "dilation", "padding", "size"), [
    (3, 2, "same", (14, 14)), (5, 3, "valid", (27, 26)), (7, 4, 3, (29, 31)),
])
def test_bf16_autocast(kernel, dilation, padding, size):
    plain, fast = _pair_of_convs(8, kernel, dilation, padding)
    x = _input(4, 8, *size, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        shape = plain(x).shape
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(2)).bfloat16()
    results = []
    for conv in (plain, fast):
        conv = conv.to(memory_format=torch.channels_last)
        conv.zero_grad(set_to_none=True)
        x_in = x.detach().clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x_in)
        out.backward(grad)
        results.append((out, out.grad_fn, [x_in.grad, conv.weight.grad, conv.bias.grad]))
    (out_p, _, grads_p), (out_f, grad_fn, grads_f) = results
    assert out_f.dtype == out_p.dtype == torch.bfloat16
    assert FAST_GRAD_FN in _grad_fn_names(grad_fn)
    _assert_same(out_f, out_p, scale=out_p.abs().max().item(), rtol=2e-2, atol=2e-2)
    for got, want in zip(grads_f, grads_p, strict=True):
        assert got.dtype == want.dtype == torch.float32  # parameters and input stay fp32
        _assert_same(got, want, scale=want.abs().max().item(), rtol=3e-2, atol=3e-2)


def _grad_fn_names(grad_fn, depth=4) -> set[str]:
    names, frontier = set(), [grad_fn]
    for _ in range(depth):
        frontier = [fn for fn in frontier if fn is not None]
        names |= {type(fn).__name__ for fn in frontier}
        frontier = [nxt for fn in frontier for nxt, _ in fn.next_functions]
    return names


@pytest.mark.parametrize("case", [
    "undilated", "stride", "reflect", "no_grad", "frozen", "multiplier", "one_channel",
])
def test_falls_back_to_conv2d_where_it_does_not_apply(case):
    kwargs = dict(in_channels=4, out_channels=4, kernel_size=3, dilation=2, padding=2, groups=4)
    if case == "undilated":
        kwargs["dilation"] = 1
    elif case == "stride":
        kwargs["stride"] = 2
    elif case == "reflect":
        kwargs["padding_mode"] = "reflect"
    elif case == "multiplier":
        kwargs["out_channels"] = 8
    elif case == "one_channel":
        kwargs.update(in_channels=1, out_channels=1, groups=1)
    torch.manual_seed(0)
    fast = DilatedDepthwiseConv2d(**kwargs)
    plain = nn.Conv2d(**kwargs)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, kwargs["in_channels"], 15, 16, requires_grad=case != "frozen")
    if case == "frozen":
        fast.requires_grad_(False)
    assert not fast.fast_path_applies(x) if case != "no_grad" else fast.fast_path_applies(x)
    with torch.set_grad_enabled(case != "no_grad"):
        out = fast(x)
        assert torch.equal(out, plain(x))
    if out.grad_fn is not None:
        assert type(out.grad_fn).__name__ != FAST_GRAD_FN


def test_state_dict_loads_both_ways_and_it_is_a_conv2d():
    torch.manual_seed(0)
    plain = nn.Conv2d(8, 8, 5, padding="same", dilation=3, groups=8, bias=False)
    fast = DilatedDepthwiseConv2d(8, 8, 5, padding="same", dilation=3, groups=8, bias=False)
    assert isinstance(fast, nn.Conv2d)
    assert fast.state_dict().keys() == plain.state_dict().keys() == {"weight"}
    fast.load_state_dict(plain.state_dict())
    assert torch.equal(fast.weight, plain.weight)
    torch.manual_seed(1)
    other = DilatedDepthwiseConv2d(8, 8, 5, padding="same", dilation=3, groups=8, bias=False)
    plain.load_state_dict(other.state_dict())
    assert torch.equal(plain.weight, other.weight)
    assert (fast.kernel_size, fast.dilation, fast.groups, fast.padding) == (
        (5, 5), (3, 3), 8, "same")


def test_a_training_step_of_the_real_model_matches_conv2d():
    """depthwise_dilated as convexp builds it (channels-last, the runner's layout), one
    forward/backward: the same loss and parameter gradients with the op and with nn.Conv2d."""
    from convexp.api import compose_config
    from convexp.models import build_model

    cfg = compose_config(["model=depthwise_dilated", "model.dilation=3"]).model
    torch.manual_seed(0)
    model = build_model(cfg).to(memory_format=torch.channels_last)
    depthwise = [m for m in model.modules() if isinstance(m, DilatedDepthwiseConv2d)]
    assert len(depthwise) == len(cfg.channels)
    reference = build_model(cfg).to(memory_format=torch.channels_last)
    for name, module in list(reference.named_modules()):
        if isinstance(module, DilatedDepthwiseConv2d):
            parent, _, child = name.rpartition(".")
            plain = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                              padding=module.padding, dilation=module.dilation,
                              groups=module.groups, bias=module.bias is not None)
            setattr(reference.get_submodule(parent), child, plain)
    reference.load_state_dict(model.state_dict())
    reference = reference.to(memory_format=torch.channels_last)

    images = torch.randn(16, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (16,))
    losses, grads = [], []
    for net in (model, reference):
        net.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(images), labels)
        loss.backward()
        losses.append(loss)
        grads.append({n: p.grad for n, p in net.named_parameters()})
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        _assert_same(grads[0][name], grads[1][name], scale=grads[1][name].abs().max().item())


def test_introspect_reports_the_dilated_conv_with_its_true_macs():
    """Shown as the Conv2d it computes (kernel, dilation, groups), with the MACs of the plain
    dilated conv: C_out * k*k * H_out*W_out * C_in/groups, also where H is not a multiple of
    the dilation."""
    for padding, size, dilation in (("same", 28, 3), ("valid", 29, 2), (1, 14, 4)):
        model = nn.Sequential(
            DilatedDepthwiseConv2d(6, 6, 3, padding=padding, dilation=dilation, groups=6),
            nn.Flatten(),
        )
        plain = nn.Sequential(
            nn.Conv2d(6, 6, 3, padding=padding, dilation=dilation, groups=6), nn.Flatten())
        report = describe(model, (6, size, size))
        layer = report.layers[0]
        out = plain[0](torch.zeros(1, 6, size, size)).shape
        assert (layer.type, layer.detail) == ("Conv2d", f"k3 d{dilation} g6 s1")
        assert layer.output_shape == tuple(out[1:])
        assert layer.macs == 6 * 9 * out[2] * out[3] * 1
        assert report.macs == layer.macs == describe(plain, (6, size, size)).macs
        assert report.receptive_field == describe(plain, (6, size, size)).receptive_field


def test_onnx_export_of_a_model_with_the_op_matches_pytorch(tmp_path):
    """torch.onnx.export(dynamo=True), as convexp.export does it: the graph holds the plain
    dilated Conv (ONNX has it natively), and onnxruntime reproduces PyTorch's outputs."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from convexp.api import compose_config
    from convexp.models import build_model

    cfg = compose_config(["model=depthwise_dilated", "model.dilation=3"]).model
    torch.manual_seed(0)
    model = build_model(cfg)
    # A few training steps so BatchNorm's statistics and the weights are not at their init.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 1, 28, 28)),
                                    torch.randint(0, 10, (8,))).backward()
        optimizer.step()
    model.eval()

    batch = torch.export.Dim("batch", min=1)
    path = tmp_path / "model.onnx"
    program = torch.onnx.export(
        model, (torch.zeros(2, 1, 28, 28),), dynamo=True, input_names=["image"],
        output_names=["logits"], dynamic_shapes={"x": {0: batch}}, external_data=False,
    )
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)

    convs = [node for node in onnx.load(str(path)).graph.node if node.op_type == "Conv"]
    dilations = [next((list(a.ints) for a in node.attribute if a.name == "dilations"), [1, 1])
                 for node in convs]
    assert dilations.count([3, 3]) == len(cfg.channels)  # one dilated depthwise per block

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    for n in (1, 5):
        (logits,) = session.run(None, {"image": images[:n].numpy()})
        with torch.no_grad():
            expected = model(images[:n]).numpy()
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


def _layout(t: torch.Tensor) -> torch.memory_format:
    """The memory format a 4-D tensor is dense in (channels-last first where both hold)."""
    if t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    assert t.is_contiguous(), f"strides {t.stride()} are neither layout"
    return torch.contiguous_format


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same strides in every dimension longer than 1 (where a stride means something; autograd
    compares gradients to their parameters the same way)."""
    return a.shape == b.shape and all(
        sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride(), strict=True) if n > 1)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("grad_channels_last", [True, False])
@pytest.mark.parametrize(("dilation", "padding", "size"), [
    (2, "same", (14, 14)), (3, "same", (14, 14)), (2, "valid", (13, 15)), (3, 1, (13, 15)),
])
def test_outputs_and_gradients_keep_the_input_layout(channels_last, grad_channels_last,
                                                     dilation, padding, size):
    """The output and the input gradient come back in the input's memory format, and the
    weight gradient in the weight's, whatever layout the incoming gradient has: a tensor
    leaving the op in another layout would make the ops around it take slow paths and add
    reorders. And the values still match nn.Conv2d's."""
    channels = 8
    plain, fast = _pair_of_convs(channels, 3, dilation, padding)
    x = _input(3, channels, *size, channels_last)
    out_plain = plain(x)
    grad = torch.randn(out_plain.shape, generator=torch.Generator().manual_seed(2))
    if grad_channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)
    out_p, grads_p, _ = _run(plain, x, grad, channels_last)
    out_f, grads_f, grad_fn = _run(fast, x, grad, channels_last)
    assert type(grad_fn).__name__ == FAST_GRAD_FN
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert out_f.is_contiguous(memory_format=layout)
    assert grads_f[0].is_contiguous(memory_format=layout)
    weight = fast.weight
    assert grads_f[1].is_contiguous(memory_format=_layout(weight))
    assert _same_layout(grads_f[1], weight)
    _assert_same(out_f, out_p)
    for got, want in zip(grads_f, grads_p, strict=True):
        _assert_same(got, want, scale=want.abs().max().item())


def test_the_real_models_tensors_stay_channels_last_forward_and_backward():
    """depthwise_dilated as the runner trains it (channels-last): every activation is
    channels-last, so is the gradient at every conv's output, and every layout, forward and
    backward, is its undilated twin's."""
    from convexp.api import compose_config
    from convexp.models import build_model

    def layouts(name: str) -> list[tuple[str, str, bool]]:
        torch.manual_seed(0)
        model = build_model(compose_config([f"model={name}"]).model)
        model = model.to(memory_format=torch.channels_last)
        seen = []

        def hook(module, args, out, where):
            if out.dim() == 4:
                seen.append((where, "out", out.is_contiguous(memory_format=torch.channels_last)))
                out.register_hook(lambda g: seen.append(
                    (where, "grad", g.is_contiguous(memory_format=torch.channels_last))))

        for where, module in model.features.named_modules():
            if not list(module.children()):
                module.register_forward_hook(lambda m, a, o, where=where: hook(m, a, o, where))
        x = _input(16, 1, 28, 28, channels_last=True)
        model(x).square().mean().backward()
        return seen

    dilated, twin = layouts("depthwise_dilated"), layouts("depthwise_separable")
    assert dilated == twin  # dilation changes no layout, forward or backward
    assert all(cl for _, kind, cl in dilated if kind == "out")
    convs = [(where, cl) for where, kind, cl in dilated if kind == "grad" and ".conv." in where]
    assert len(convs) == 4 and all(cl for _, cl in convs), convs
