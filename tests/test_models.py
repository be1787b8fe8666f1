"""Model construction: every conf/model/*.yaml composes and builds, the conv operators are what
their names say, the classifier width is derived from the shapes, and bad architectures fail
with errors that name the problem. No training here: these are shape and structure checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import error_chain
from einops.layers.torch import Rearrange
from torch import nn

from convexp.api import compose_config
from convexp.errors import ConfigError, ModelBuildError
from convexp.models import build_model, list_models

CONF_MODELS = Path(__file__).resolve().parents[1] / "conf" / "model"
MODEL_FILES = sorted(p.stem for p in CONF_MODELS.glob("*.yaml"))
VARIANTS = ["standard", "depthwise_separable", "dilated", "depthwise_dilated"]
BATCH = 3


def _model_cfg(*overrides: str):
    return compose_config(list(overrides)).model


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears, "no Linear classifier in the model"
    return linears[-1]


def _forward(model: nn.Module, batch: int = BATCH) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name", MODEL_FILES)
def test_every_model_file_builds_for_colour_32x32_images(name):
    """CIFAR-10's 3x32x32: each model file builds, runs forward and is described."""
    from convexp.introspect import describe_model

    cfg = _model_cfg(f"model={name}")
    model = build_model(cfg, image_shape=(3, 32, 32))
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (BATCH, 10) and torch.isfinite(out).all()
    assert _convs(model)[0].in_channels == 3
    report, _ = describe_model(cfg, (3, 32, 32), 10, model)
    assert report.input_shape == (3, 32, 32) and report.params > 0


def test_model_files_found():
    # Guards the parametrisation below against an empty glob (e.g. conf/ moved).
    assert set(VARIANTS) | {"book_cnn"} <= set(MODEL_FILES)


@pytest.mark.parametrize("name", MODEL_FILES)
def test_every_model_file_composes_builds_and_classifies(name):
    cfg = _model_cfg(f"model={name}")
    assert cfg.name in list_models(), f"conf/model/{name}.yaml names unregistered {cfg.name!r}"
    model = build_model(cfg)
    out = _forward(model)
    assert out.shape == (BATCH, 10)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # Different images give different logits: the net is wired to its input.
    assert not torch.allclose(out[0], out[1])


def test_list_models_lists_the_five():
    assert sorted(list_models()) == sorted([*VARIANTS, "book_cnn"])


def test_unknown_model_name_raises_config_error_listing_registered():
    cfg = _model_cfg("model=standard")
    cfg.name = "nope"
    with pytest.raises(ConfigError) as excinfo:
        build_model(cfg)
    message = str(excinfo.value)
    assert "'nope'" in message
    for name in list_models():
        assert name in message


def test_book_cnn_is_the_textbook_network():
    model = build_model(_model_cfg("model=book_cnn"))
    assert sum(p.numel() for p in model.parameters()) == 24_496
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 24_496
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    structure = [
        (type(m).__name__, m.in_channels, m.out_channels, m.kernel_size, m.padding, m.stride,
         m.dilation, m.groups) if isinstance(m, nn.Conv2d)
        else (type(m).__name__, m.in_features, m.out_features)
        for m in layers
    ]
    assert structure == [
        ("Conv2d", 1, 12, (7, 7), (0, 0), (1, 1), (1, 1), 1),
        ("Conv2d", 12, 24, (5, 5), (0, 0), (1, 1), (1, 1), 1),
        ("Conv2d", 24, 6, (3, 3), (0, 0), (1, 1), (1, 1), 1),
        ("Linear", 1536, 10),
    ]
    assert all(m.bias is not None for m in layers)
    # Nothing else with state or spatial effect: no norm, no pooling, no dropout.
    kinds = {type(m) for m in model.modules()} - {type(model)}
    assert kinds <= {nn.Conv2d, nn.ReLU, Rearrange, nn.Linear}
    # It flattens as the textbook does, with einops, in the order nn.Flatten would.
    assert isinstance(model.flatten, Rearrange) and model.flatten.pattern == "b c h w -> b (c h w)"
    features = torch.randn(2, 6, 16, 16)
    assert torch.equal(model.flatten(features), nn.Flatten()(features))
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2
    assert _forward(model).shape == (BATCH, 10)


@pytest.mark.parametrize("override", ["model.kernel_size=3", "model.dilation=2",
                                      "model.channels=[8,16]"])
def test_book_cnn_rejects_the_conv_net_fields(override):
    """The textbook net's layers are fixed: its schema has no field but its name, so setting
    kernel_size, dilation or channels fails at composition, naming the key and the schema."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as excinfo:
        _model_cfg("model=book_cnn", override)
    message = error_chain(excinfo.value)
    field = key.split(".")[1]
    assert key in message and f"Key '{field}' not in 'BookCNNConfig'" in message, message


@pytest.mark.parametrize("name", ["depthwise_separable", "depthwise_dilated"])
def test_depthwise_variants_use_depthwise_then_pointwise(name):
    cfg = _model_cfg(f"model={name}")
    convs = _convs(build_model(cfg))
    # One (depthwise, pointwise) pair per stage, nothing else.
    assert len(convs) == 2 * len(cfg.channels)
    c_in = 1
    for i, c_out in enumerate(cfg.channels):
        dw, pw = convs[2 * i], convs[2 * i + 1]
        # One filter per input channel, except on the 1-channel image, where the first
        # depthwise conv has c_out filters (a depth multiplier; still groups=in_channels).
        multiplier = c_out if c_in == 1 else 1
        mid = c_in * multiplier
        assert dw.in_channels == dw.groups == c_in, f"stage {i}: {dw}"
        assert dw.out_channels == mid, f"stage {i}: {dw}"
        assert dw.kernel_size == (cfg.kernel_size,) * 2
        assert dw.dilation == (cfg.dilation,) * 2
        assert dw.weight.shape == (mid, 1, cfg.kernel_size, cfg.kernel_size)
        assert (pw.in_channels, pw.out_channels, pw.kernel_size, pw.groups) == (
            mid, c_out, (1, 1), 1)
        c_in = c_out


@pytest.mark.parametrize("name", ["standard", "dilated"])
def test_dense_variants_use_full_convs(name):
    cfg = _model_cfg(f"model={name}")
    convs = _convs(build_model(cfg))
    assert [(c.in_channels, c.out_channels, c.groups) for c in convs] == [
        (1, 32, 1), (32, 64, 1)]
    assert all(c.kernel_size == (cfg.kernel_size,) * 2 for c in convs)


@pytest.mark.parametrize("name,dilated", [
    ("standard", False), ("depthwise_separable", False),
    ("dilated", True), ("depthwise_dilated", True),
])
def test_dilation_is_in_the_spatial_convs(name, dilated):
    cfg = _model_cfg(f"model={name}")
    spatial = [c for c in _convs(build_model(cfg)) if c.kernel_size != (1, 1)]
    assert len(spatial) == len(cfg.channels)
    for conv in spatial:
        assert conv.dilation == (cfg.dilation,) * 2
        assert (conv.dilation[0] > 1) is dilated


@pytest.mark.parametrize("name", VARIANTS)
def test_kernel_and_dilation_overrides_change_the_built_convs(name):
    cfg = _model_cfg(f"model={name}", "model.kernel_size=5", "model.dilation=3")
    model = build_model(cfg)
    spatial = [c for c in _convs(model) if c.kernel_size != (1, 1)]
    assert len(spatial) == 2
    for conv in spatial:
        assert conv.kernel_size == (5, 5)
        assert conv.dilation == (3, 3)
    # padding=same keeps the map size, so the classifier width does not change: 64 * 7 * 7.
    assert _last_linear(model).in_features == 64 * 7 * 7
    assert _forward(model).shape == (BATCH, 10)


@pytest.mark.parametrize("overrides,width", [
    # same padding: 28 -pool-> 14 -pool-> 7; 64 channels.
    ([], 64 * 7 * 7),
    # channels [8, 16]: 16 channels on the same 7x7 map.
    (["model.channels=[8,16]"], 16 * 7 * 7),
    # three stages: 28 -> 14 -> 7 -> 3 (floor).
    (["model.channels=[8,16,32]"], 32 * 3 * 3),
    # valid, k3 d1: 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5.
    (["model.padding=valid"], 64 * 5 * 5),
    # valid, k3 d2 (effective 5): 28 -> 24 -> 12 -> 8 -> 4.
    (["model.padding=valid", "model.dilation=2"], 64 * 4 * 4),
    # valid, k5 d1, channels [8, 16]: 28 -> 24 -> 12 -> 8 -> 4.
    (["model.padding=valid", "model.kernel_size=5", "model.channels=[8,16]"], 16 * 4 * 4),
    # no pooling, valid k3: 28 -> 26 -> 24.
    (["model.padding=valid", "model.pool=none"], 64 * 24 * 24),
    # global average pooling head: one value per channel.
    (["model.head=avg"], 64),
])
@pytest.mark.parametrize("name", ["standard", "depthwise_separable"])
def test_classifier_width_is_derived(name, overrides, width):
    model = build_model(_model_cfg(f"model={name}", *overrides))
    assert _last_linear(model).in_features == width
    assert _last_linear(model).out_features == 10
    assert _forward(model).shape == (BATCH, 10)


def test_collapsing_valid_convolution_raises_model_build_error():
    # k7 d4: effective kernel 4 * 6 + 1 = 25. Block 0: 28 -> 4 -pool-> 2; block 1 gets 2x2.
    cfg = _model_cfg("model=depthwise_dilated", "model.padding=valid", "model.kernel_size=7",
                     "model.dilation=4")
    with pytest.raises(ModelBuildError) as excinfo:
        build_model(cfg)
    message = str(excinfo.value)
    assert "features.1" in message
    assert "2x2" in message
    assert "25" in message


def test_collapse_in_the_first_block_names_block_zero():
    # k15 d2: effective kernel 29 > 28 already in block 0.
    cfg = _model_cfg("model=standard", "model.padding=valid", "model.kernel_size=15",
                     "model.dilation=2")
    with pytest.raises(ModelBuildError) as excinfo:
        build_model(cfg)
    message = str(excinfo.value)
    assert "features.0" in message and "28x28" in message and "29" in message


@pytest.mark.parametrize("overrides,width", [
    # Effective kernel 3 * 9 + 1 = 28 on 28x28 valid: a 1x1 map (the collapse check lets
    # 28 <= 28 through and never pools a 1x1 map away).
    (["model.padding=valid", "model.kernel_size=10", "model.dilation=3", "model.channels=[4]"],
     4),
    # Five same-padded stages: 28 -> 14 -> 7 -> 3 -> 1, the last block sees a 1x1 map.
    (["model.channels=[8,16,32,64,128]"], 128),
])
def test_one_by_one_feature_map_builds_without_norm(overrides, width):
    model = build_model(_model_cfg("model=standard", "model.norm=none", *overrides))
    assert _last_linear(model).in_features == width
    assert _forward(model).shape == (BATCH, 10)


@pytest.mark.parametrize("overrides,width", [
    (["model.padding=valid", "model.kernel_size=10", "model.dilation=3", "model.channels=[4]"],
     4),
    (["model.channels=[8,16,32,64,128]"], 128),
])
def test_one_by_one_feature_map_builds_with_batch_norm(overrides, width):
    # The same nets with the default norm=batch: training batches have many images, so only
    # the construction-time dry run is in the way.
    model = build_model(_model_cfg("model=standard", *overrides))
    assert _last_linear(model).in_features == width
    assert _forward(model).shape == (BATCH, 10)


@pytest.mark.parametrize("name", ["standard", "depthwise_separable"])
def test_a_dilation_schedule_builds_one_dilation_per_block(name):
    model = build_model(_model_cfg(f"model={name}", "model.channels=[8,16,32]",
                                   "model.dilation=[1,2,5]"))
    depthwise = [c for c in _convs(model) if c.kernel_size == (3, 3)]
    assert [c.dilation[0] for c in depthwise] == [1, 2, 5]
    assert _forward(model).shape == (BATCH, 10)
    as_int = build_model(_model_cfg(f"model={name}", "model.dilation=2"))
    as_list = build_model(_model_cfg(f"model={name}", "model.dilation=[2,2]"))
    assert str(as_int) == str(as_list)  # an int is the schedule that repeats it
    with pytest.raises(ConfigError, match="one dilation >= 1 per block"):
        build_model(_model_cfg(f"model={name}", "model.dilation=[1,2,5]"))  # two blocks


@pytest.mark.parametrize("name", ["depthwise_separable", "depthwise_dilated"])
def test_channels_last_training_keeps_every_activation_gradient_channels_last(name, monkeypatch):
    """The classifier's flatten used to hand the last pool a contiguous gradient for its
    channels-last input (oneDNN's slow mixed-layout backward). The gradient is reordered, and
    nothing else changes: same logits, same parameter gradients, same (c h w) classifier."""
    import convexp.models as models

    def run(reorder: bool):
        monkeypatch.setattr(models, "FLATTEN_GRAD_IN_INPUT_LAYOUT", reorder)
        torch.manual_seed(0)
        model = build_model(_model_cfg(f"model={name}")).to(memory_format=torch.channels_last)
        model.train()
        x = torch.randn(4, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        layouts = []
        for block in model.features:
            block.register_full_backward_hook(lambda m, gi, go: layouts.append(
                go[0].is_contiguous(memory_format=torch.channels_last)))
        out = model(x)
        out.square().sum().backward()
        return out, {n: p.grad for n, p in model.named_parameters()}, layouts

    out0, grads0, layouts0 = run(False)
    out1, grads1, layouts1 = run(True)
    # Backward order: block 2's output gradient (from the flatten) first, then block 1's.
    assert layouts0 == [False, True]
    assert layouts1 == [True, True]
    torch.testing.assert_close(out1, out0, rtol=0, atol=0)
    for n in grads0:
        torch.testing.assert_close(grads1[n], grads0[n], rtol=1e-5, atol=1e-6, msg=n)
    # The classifier reads (c h w) in either layout: a contiguous twin gives the same logits.
    torch.manual_seed(0)
    twin = build_model(_model_cfg(f"model={name}")).train()
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(twin(x), out1, rtol=1e-4, atol=1e-5)
