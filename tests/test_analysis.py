"""Tests for convexp.analysis: effective receptive fields of small torch nets, and latency."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from convexp.analysis import effective_receptive_field, inference_latency_ms
from convexp.erf_maps import draw_erf, erf_stats, rf_window, save_erf_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _images(n=16, size=28, channels=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=generator)


def _conv(k, d, c_in=1, c_out=1, ones=False, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, k, dilation=d, padding=d * (k - 1) // 2, bias=False)
    if ones:
        nn.init.ones_(conv.weight)
    return conv


def _support(erf):
    rows, cols = np.nonzero(erf > 1e-9)
    return set(zip(rows.tolist(), cols.tolist(), strict=True))


def _square(lo, hi, step=1):
    return {(r, c) for r in range(lo, hi + 1, step) for c in range(lo, hi + 1, step)}


class Net(nn.Module):
    """convexp's ConvNet shape in plain torch: (conv -> BN -> ReLU -> 2x2 max-pool) x 2, then a
    linear classifier; `features` holds the conv blocks."""

    def __init__(self, k=3, d=1, channels=(8, 16), dropout=0.0, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        layers, c_in = [], 1
        for c_out in channels:
            layers += [
                nn.Conv2d(c_in, c_out, k, dilation=d, padding=d * (k - 1) // 2, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in * 7 * 7, 10)

    def forward(self, x):
        return self.classifier(self.dropout(self.features(x).flatten(1)))


def _net_rf(k, d, blocks=2):
    """Theoretical RF of Net: each conv adds d(k-1) x jump, each pool 1 x jump, then jump x 2."""
    rf, jump = 1, 1
    for _ in range(blocks):
        rf += d * (k - 1) * jump
        rf += jump
        jump *= 2
    return rf


# ----------------------------------------------------------------------------- support


def test_single_3x3_conv_sees_exactly_a_3x3_window():
    erf = effective_receptive_field(_conv(3, 1), _images())
    assert erf.shape == (28, 28) and erf.dtype == np.float64
    assert erf.max() == pytest.approx(1.0)
    assert _support(erf) == _square(13, 15)  # centre output (14, 14), padding 1
    stats = erf_stats(erf, rf=3)
    assert stats["erf_support"] == 9 and stats["rf_window"] == [13, 13, 15, 15]
    assert stats["rf_holes"] == 0.0 and stats["erf_outside_rf"] == pytest.approx(0.0)


def test_dilated_3x3_conv_has_a_gridded_erf():
    erf = effective_receptive_field(_conv(3, 2), _images())
    # 9 taps spread over the 5x5 theoretical RF, every other pixel
    assert _support(erf) == _square(12, 16, step=2)
    stats = erf_stats(erf, rf=5)
    assert stats["erf_support"] == 9
    assert stats["rf_window"] == [12, 12, 16, 16]
    assert stats["rf_holes"] == pytest.approx(16 / 25)


def test_two_dilated_layers_leave_holes_and_a_dense_first_layer_fills_them():
    gridded = nn.Sequential(_conv(3, 2, ones=True), _conv(3, 2, ones=True, seed=1))
    erf = effective_receptive_field(gridded, _images())
    assert _support(erf) == _square(10, 18, step=2)  # offsets -4..4 step 2: 25 of 81 pixels
    assert erf_stats(erf, rf=9)["rf_holes"] == pytest.approx(56 / 81)
    # hybrid dilation (1 then 2): offsets -3..3 all reached, no holes in the 7x7 RF
    hybrid = nn.Sequential(_conv(3, 1, ones=True), _conv(3, 2, ones=True, seed=1))
    erf = effective_receptive_field(hybrid, _images())
    assert _support(erf) == _square(11, 17)
    assert erf_stats(erf, rf=7)["rf_holes"] == 0.0


def test_erf_values_follow_the_kernel_for_a_linear_stack():
    # Two all-ones 3x3 convs: the ERF is the 5x5 triangle kernel outer(t, t), t = 1 2 3 2 1.
    stack = nn.Sequential(_conv(3, 1, ones=True), _conv(3, 1, ones=True))
    erf = effective_receptive_field(stack, _images())
    t = np.array([1, 2, 3, 2, 1]) / 3
    np.testing.assert_allclose(erf[12:17, 12:17], np.outer(t, t), rtol=1e-6)


def test_erf_95_grows_with_dilation():
    single = [
        erf_stats(effective_receptive_field(_conv(3, d, ones=True), _images())) for d in (1, 2, 3)
    ]
    assert [s["erf_95"] for s in single] == [3, 5, 7]
    nets = [Net(3, d) for d in (1, 2, 3)]
    sizes = [erf_stats(effective_receptive_field(n, _images(32)))["erf_95"] for n in nets]
    assert sizes[0] < sizes[1] < sizes[2]
    for d, size in zip((1, 2, 3), sizes, strict=True):
        assert size <= _net_rf(3, d)  # 10, 16, 22


def test_conv_net_erf_lies_inside_its_theoretical_rf():
    for k, d in ((3, 1), (3, 2), (5, 1)):
        net = Net(k, d)
        rf = _net_rf(k, d)
        erf = effective_receptive_field(net, _images(32))
        stats = erf_stats(erf, rf)
        assert stats["erf_outside_rf"] == pytest.approx(0.0, abs=1e-12)
        top, left, bottom, right = stats["rf_window"]
        assert (bottom - top + 1, right - left + 1) == (rf, rf)
        # support bounding box = the RF window (pools fill the dilation holes here)
        rows, cols = np.nonzero(erf > 1e-9)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (top, bottom, left, right)


def test_fallback_without_features_hooks_the_last_spatial_layer():
    net = Net(3, 2)

    class NoFeatures(nn.Module):  # the same layers, under another name
        def __init__(self):
            super().__init__()
            self.body = net.features
            self.classifier = net.classifier

        def forward(self, x):
            return self.classifier(self.body(x).flatten(1))

    images = _images(8)
    np.testing.assert_allclose(
        effective_receptive_field(NoFeatures(), images), effective_receptive_field(net, images)
    )

    class BookLike(nn.Module):  # the textbook net: valid convs 7, 5, 3; RF 13
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv1, self.conv2, self.conv3 = (
                nn.Conv2d(1, 4, 7),
                nn.Conv2d(4, 8, 5),
                nn.Conv2d(8, 2, 3),
            )
            self.classifier = nn.Linear(2 * 16 * 16, 10)

        def forward(self, x):
            x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            return self.classifier(self.conv3(x).flatten(1))

    erf = effective_receptive_field(BookLike(), _images(32))
    stats = erf_stats(erf, rf=13)
    # output (8, 8) of the 16x16 map <- conv2 outputs 8..10 <- conv1 outputs 8..14 <- 8..20
    assert stats["rf_window"] == [8, 8, 20, 20]
    assert stats["erf_outside_rf"] == pytest.approx(0.0, abs=1e-12)
    assert stats["erf_support"] <= 169

    with pytest.raises(ValueError, match="no spatial feature map"):
        effective_receptive_field(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), _images(2))


def test_a_compile_wrapper_is_unwrapped():
    """torch.compile returns a wrapper holding the eager module as `_orig_mod`; the ERF is
    taken on that module (no recompilation for input gradients)."""
    net = Net(3, 2)

    class Wrapper(nn.Module):  # stands in for torch._dynamo's OptimizedModule
        def __init__(self):
            super().__init__()
            self._orig_mod = net

        def forward(self, x):
            raise AssertionError("the compiled forward must not run")

    images = _images(4)
    np.testing.assert_array_equal(
        effective_receptive_field(Wrapper(), images), effective_receptive_field(net, images)
    )


# ----------------------------------------------------------------------------- side effects


def test_model_state_is_left_as_it_was():
    net = Net(3, 2, dropout=0.5)
    net.train()
    net.features[1].eval()  # a mixed state must come back exactly
    net.features[0].weight.requires_grad_(False)
    flags = [m.training for m in net.modules()]
    requires = [p.requires_grad for p in net.parameters()]
    state = {k: v.clone() for k, v in net.state_dict().items()}

    first = effective_receptive_field(net, _images(8))
    assert [m.training for m in net.modules()] == flags
    assert [p.requires_grad for p in net.parameters()] == requires
    assert all(p.grad is None for p in net.parameters())  # nothing accumulated
    for key, value in net.state_dict().items():  # BN statistics untouched: eval mode
        assert torch.equal(value, state[key]), key
    # eval mode inside: dropout is off, so the ERF is deterministic
    np.testing.assert_array_equal(first, effective_receptive_field(net, _images(8)))
    with torch.no_grad():  # also when called under no_grad
        np.testing.assert_array_equal(first, effective_receptive_field(net, _images(8)))


def test_accepts_numpy_and_chunks_the_batch():
    net = Net(3, 1)
    images = _images(10)
    whole = effective_receptive_field(net, images, batch_size=64)
    chunked = effective_receptive_field(net, images.squeeze(1).numpy(), batch_size=3)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-9)  # float32 convs
    with pytest.raises(ValueError, match="normalised floats"):
        effective_receptive_field(net, (images * 50).to(torch.uint8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        effective_receptive_field(net, torch.zeros(28, 28))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_erf_on_cuda_matches_cpu():
    net, images = Net(3, 2), _images(8)
    cpu = effective_receptive_field(net, images)
    gpu = effective_receptive_field(net.cuda(), images)
    assert next(net.parameters()).is_cuda
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-6)
    assert math.isfinite(inference_latency_ms(net, batch_size=64))


# ----------------------------------------------------------------------------- stats and PNG


def test_erf_stats_on_hand_made_arrays():
    assert erf_stats(np.zeros((5, 5)))["erf_95"] is None
    delta = np.zeros((9, 9))
    delta[4, 4] = 1.0
    assert erf_stats(delta, rf=3) | {"erf_centre": None} == {
        "erf_95": 1,
        "erf_support": 1,
        "erf_centre": None,
        "rf_window": [3, 3, 5, 5],
        "rf_fill": pytest.approx(1 / 9),
        "rf_holes": pytest.approx(8 / 9),
        "erf_outside_rf": 0.0,
        "erf_95_over_rf": pytest.approx(1 / 3),
    }
    # Support cut by the left and top edges: the window is anchored at its far end.
    edge = np.zeros((10, 10))
    edge[0:3, 0:3] = 1.0
    assert rf_window(edge, 5) == (0, 0, 2, 2)
    assert rf_window(edge, 5, clip=False) == (-2, -2, 2, 2)
    # 95% of a uniform 4x4 block needs the whole block (15/16 < 95%)
    block = np.zeros((12, 12))
    block[4:8, 4:8] = 1.0
    assert erf_stats(block)["erf_95"] == 4
    assert erf_stats(block, mass=0.5)["erf_50"] == 3  # 9/16 >= 50%


def test_save_erf_png_leaves_no_pyplot_state(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    before = plt.get_fignums()
    erf = effective_receptive_field(_conv(3, 2), _images(4))
    path = save_erf_png(erf, tmp_path / "erf.png", "3x3, dilation 2", rf=5)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert plt.get_fignums() == before
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw_erf(ax, erf, rf=5)
    (square,) = ax.patches  # the theoretical RF: 5x5 pixels around the centre
    assert (square.get_x(), square.get_y(), square.get_width()) == (11.5, 11.5, 5)


# ----------------------------------------------------------------------------- latency


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = Net(3, 1)
        self.calls = 0
        self.saw_grad = self.saw_training = False

    def forward(self, x):
        self.calls += 1
        self.saw_grad |= torch.is_grad_enabled()
        self.saw_training |= self.net.training
        return self.net(x)


def test_inference_latency_is_positive_finite_and_in_eval_no_grad():
    model = Counting()
    model.train()
    ms = inference_latency_ms(
        model, (1, 28, 28), "cpu", batch_size=32, repeats=3, warmup=1, budget_s=None
    )
    assert math.isfinite(ms) and 0 < ms < 1000
    assert model.calls == 4  # 1 warm-up + 3 timed
    assert not model.saw_grad and not model.saw_training
    assert model.training and model.net.features[1].training  # restored
    # the time budget stops after one timed batch
    model.calls = 0
    inference_latency_ms(model, batch_size=8, repeats=50, warmup=1, budget_s=0.0)
    assert model.calls == 2


def test_inference_latency_of_the_default_net_is_a_positive_figure():
    """Its speed is measured in benchmarks, not asserted here; the budget logic is tested
    above with a budget the test sets."""
    net = Net(3, 1, channels=(32, 64))  # convexp's default width
    ms = inference_latency_ms(net)
    assert math.isfinite(ms) and ms > 0


def _reference_erf(net, images):
    """The definition, image by image: |d(sum over channels of the centre)/d input|, mean."""
    net.eval()
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    for image in images:
        x = image[None].clone().requires_grad_(True)
        fmap = net.features(x)
        h, w = fmap.shape[-2:]
        (grad,) = torch.autograd.grad(fmap[0, :, h // 2, w // 2].sum(), x)
        total += grad.abs().sum(dim=(0, 1)).double()
    erf = (total / len(images)).numpy()
    return erf / erf.max()


@pytest.mark.parametrize("channels_last", [True, False])
def test_erf_of_the_dilated_depthwise_net_follows_the_definition(channels_last, monkeypatch):
    """convexp's depthwise_dilated net (its fast dilated backward) as training leaves it, in
    either memory format: equal to the per-image definition, and without computing any weight
    gradient (the ERF needs the input's only)."""
    from convexp import ops
    from convexp.api import compose_config
    from convexp.models import build_model

    torch.manual_seed(0)
    net = build_model(compose_config(["model=depthwise_dilated"]).model)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    images = _images(6)
    expected = _reference_erf(net, images)
    net.train()
    weight_grads = []
    original = ops._weight_grad
    monkeypatch.setattr(ops, "_weight_grad", lambda *a: weight_grads.append(1) or original(*a))
    x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
    erf = effective_receptive_field(net, x, batch_size=4)
    np.testing.assert_allclose(erf, expected, rtol=1e-4, atol=1e-6)
    assert weight_grads == []
    assert all(p.requires_grad for p in net.parameters())
    # The same monkeypatch sees the weight gradient of a training step: the check can fail.
    net(x).sum().backward()
    assert weight_grads
