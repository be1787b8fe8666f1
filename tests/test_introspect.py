import json

import pytest
import torch
from torch import nn

from convexp.introspect import count_macs, describe, receptive_field


class SeparableConv(nn.Module):
    def __init__(self, channels_in, channels_out, kernel_size, dilation=1):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.depthwise = nn.Conv2d(
            channels_in,
            channels_in,
            kernel_size,
            padding=padding,
            dilation=dilation,
            groups=channels_in,
        )
        self.pointwise = nn.Conv2d(channels_in, channels_out, 1)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


def textbook_net():
    return nn.Sequential(
        nn.Conv2d(1, 12, 7),
        nn.ReLU(),
        nn.Conv2d(12, 24, 5),
        nn.ReLU(),
        nn.Conv2d(24, 6, 3),
        nn.Flatten(),
        nn.Linear(1536, 10),
    )


def test_textbook_net_params_macs_and_shapes():
    report = describe(textbook_net(), (1, 28, 28))
    layers = {layer.name: layer for layer in report.layers}

    assert report.params == 24_496
    assert layers["0"].macs == 22 * 22 * 12 * 49 == 284_592
    assert layers["2"].macs == 18 * 18 * 24 * 12 * 25 == 2_332_800
    assert layers["4"].macs == 16 * 16 * 6 * 24 * 9 == 331_776
    assert layers["6"].macs == 1536 * 10 == 15_360
    conv_macs = sum(layer.macs for layer in report.layers if layer.type == "Conv2d")
    assert conv_macs == 2_949_168
    assert report.macs == sum(layer.macs for layer in report.layers) == 2_964_528
    assert count_macs(textbook_net(), (1, 28, 28)) == 2_964_528

    assert [layer.name for layer in report.layers] == [str(i) for i in range(7)]
    assert layers["0"].output_shape == (12, 22, 22)
    assert layers["4"].output_shape == (6, 16, 16)
    assert layers["5"].output_shape == (1536,)
    assert layers["6"].output_shape == (10,)
    assert layers["0"].params == 12 * 49 + 12
    assert layers["1"].params == layers["1"].macs == 0
    assert layers["0"].detail == "k7 d1 g1 s1"
    assert report.receptive_field == 13  # 7 + (5-1) + (3-1)


def test_format_table_and_to_dict():
    report = describe(textbook_net())
    table = report.format_table()
    for layer in report.layers:
        assert layer.name in table
        assert str(layer.output_shape) in table
    for text in (
        "(12, 22, 22)",
        "(1536,)",
        "24,496",
        "2,964,528 (2.96 M)",
        "RF 13x13",
        "MACs: conv and linear, from torch.utils.flop_counter",
    ):
        assert text in table

    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert (as_dict["params"], as_dict["macs"], as_dict["receptive_field"]) == (
        24_496,
        2_964_528,
        13,
    )
    assert as_dict["layers"][0]["output_shape"] == [12, 22, 22]


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        # Dilation 2 makes each 3x3 kernel span 5: 1 + 4 + 4.
        ([nn.Conv2d(1, 4, 3, dilation=2), nn.Conv2d(4, 4, 3, dilation=2)], 9),
        # conv3: r=3, j=1; maxpool k2 s2: r=3+1*1=4, j=2; conv3: r=4+2*2=8.
        ([nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3)], 8),
        # conv3 s2: r=3, j=2; conv3 d2 (span 5): r=3+4*2=11; avgpool k2: r=11+1*2=13.
        ([nn.Conv2d(1, 4, 3, stride=2), nn.Conv2d(4, 4, 3, dilation=2), nn.AvgPool2d(2)], 13),
        # Depthwise k5 d3 spans 13, pointwise 1x1 adds nothing: 1 + 12 = 13, then 13 + 12 = 25.
        ([SeparableConv(1, 8, 5, dilation=3), nn.ReLU(), SeparableConv(8, 8, 5, dilation=3)], 25),
        # Norms, activations and 1x1 convs add nothing; the global pool ends the spatial part.
        (
            [
                nn.Conv2d(1, 4, 5, padding=2),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.Dropout(),
                nn.Conv2d(4, 4, 1),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(4, 10),
            ],
            5,
        ),
    ],
)
def test_receptive_field_by_hand(layers, expected):
    assert receptive_field(nn.Sequential(*layers), (1, 28, 28)) == expected


def test_separable_vs_standard_conv_by_hand():
    channels_in, channels_out, k, size = 32, 64, 3, 14
    shape = (channels_in, size, size)

    standard = describe(
        nn.Sequential(nn.Conv2d(channels_in, channels_out, k, padding="same")), shape
    )
    assert standard.params == channels_in * channels_out * k * k + channels_out
    assert standard.macs == size * size * channels_out * channels_in * k * k
    assert standard.layers[0].output_shape == (channels_out, size, size)

    separable = describe(nn.Sequential(SeparableConv(channels_in, channels_out, k)), shape)
    depthwise, pointwise = separable.layers
    assert (depthwise.name, pointwise.name) == ("0.depthwise", "0.pointwise")
    assert depthwise.detail == "k3 d1 g32 s1"
    assert depthwise.params == channels_in * k * k + channels_in
    assert pointwise.params == channels_in * channels_out + channels_out
    assert separable.params == depthwise.params + pointwise.params
    assert depthwise.macs == size * size * channels_in * k * k
    assert pointwise.macs == size * size * channels_in * channels_out
    assert separable.macs == depthwise.macs + pointwise.macs
    assert pointwise.output_shape == (channels_out, size, size)


def test_ops_outside_leaf_modules_are_attributed_to_their_module():
    class ScaledHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.projection = nn.Parameter(torch.ones(2 * 26 * 26, 5))

        def forward(self, x):
            return self.conv(x).flatten(1) @ self.projection

    report = describe(ScaledHead())
    head = next(layer for layer in report.layers if layer.name == "")
    assert head.params == 2 * 26 * 26 * 5
    assert head.macs == 2 * 26 * 26 * 5
    assert report.macs == sum(layer.macs for layer in report.layers)
    assert report.params == sum(layer.params for layer in report.layers)


def test_training_flags_and_state_are_preserved():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(), nn.Flatten())
    model.train()
    model[2].eval()
    flags = [module.training for module in model.modules()]

    describe(model)

    assert [module.training for module in model.modules()] == flags
    assert model[1].num_batches_tracked.item() == 0  # ran in eval mode: no BN statistics update
    assert all(p.grad is None for p in model.parameters())

    model.eval()
    describe(model)
    assert not any(module.training for module in model.modules())


class SubGridConv(nn.Conv2d):
    """A dilated depthwise conv computed on the zero-padded d x d sub-grids of its input, in
    the batch: the flop counter sees the undilated conv over the padded sub-grids, which has
    more output positions than the dilated conv when H or W is not a multiple of d."""

    def forward(self, x):
        (d, _), (k, _), (p, _) = self.dilation, self.kernel_size, self.padding
        n, c, h, w = x.shape
        x = nn.functional.pad(x, (p, p + (-(w + 2 * p)) % d, p, p + (-(h + 2 * p)) % d))
        hs, ws = x.shape[2] // d, x.shape[3] // d
        sub = x.reshape(n, c, hs, d, ws, d).permute(3, 5, 0, 1, 2, 4).reshape(-1, c, hs, ws)
        out = nn.functional.conv2d(sub, self.weight, self.bias, groups=self.groups)
        ho, wo = h + 2 * p - d * (k - 1), w + 2 * p - d * (k - 1)
        out = out.reshape(d, d, n, c, *out.shape[2:]).permute(2, 3, 4, 0, 5, 1)
        return out.reshape(n, c, out.shape[2] * d, -1)[:, :, :ho, :wo]


class DeclaredSubGridConv(SubGridConv):
    report_type = "Conv2d"

    def report_macs(self, inputs, output):
        return output.numel() * (self.in_channels // self.groups) * self.kernel_size[0] ** 2


def test_a_module_can_declare_its_macs_and_type():
    """The counter counts what a module's ops do; a module that computes a layer by other
    means declares the layer's MACs and type, and the report shows those, in its row and in
    the total, while other layers keep their counted MACs."""
    # 14 + 2*3 padding = 20 is not a multiple of 3: padded to 21, 3x3 sub-grids of 7x7 whose
    # undilated 3x3 conv gives 5x5 outputs each: 15x15 positions for a 14x14 output.
    channels, size, d = 4, 14, 3
    kwargs = dict(padding=d, dilation=d, groups=channels, bias=False)
    plain = nn.Conv2d(channels, channels, 3, **kwargs)
    counted = SubGridConv(channels, channels, 3, **kwargs)
    declared = DeclaredSubGridConv(channels, channels, 3, **kwargs)
    for conv in (counted, declared):
        conv.load_state_dict(plain.state_dict())
        x = torch.randn(2, channels, size, size)
        torch.testing.assert_close(conv(x), plain(x))

    def net(conv):
        return nn.Sequential(conv, nn.Conv2d(channels, 8, 1), nn.Flatten())

    true_macs = channels * 9 * size * size  # C_out * k*k * H_out*W_out * C_in/groups
    pointwise_macs = channels * 8 * size * size
    reports = {name: describe(net(conv), (channels, size, size))
               for name, conv in (("plain", plain), ("counted", counted),
                                  ("declared", declared))}
    assert reports["plain"].layers[0].macs == true_macs
    # Without a declaration, the report counts the sub-grid conv's 15x15 positions.
    assert reports["counted"].layers[0].macs == channels * 9 * 15 * 15 > true_macs
    assert reports["counted"].layers[0].type == "SubGridConv"

    report = reports["declared"]
    depthwise, pointwise = report.layers[:2]
    assert (depthwise.type, depthwise.detail) == ("Conv2d", "k3 d3 g4 s1")
    assert depthwise.output_shape == (channels, size, size)
    assert depthwise.macs == true_macs
    assert pointwise.macs == pointwise_macs
    assert report.macs == true_macs + pointwise_macs == reports["plain"].macs
    assert report.macs == sum(layer.macs for layer in report.layers)
    assert report.receptive_field == reports["plain"].receptive_field == 7
    table = report.format_table()
    assert "Conv2d" in table and "SubGridConv" not in table
    assert f"{true_macs + pointwise_macs:,}" in table


def test_declared_macs_of_a_container_replace_only_its_own_ops():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.scale = nn.Parameter(torch.ones(2 * 26 * 26, 2 * 26 * 26))

        def forward(self, x):
            return self.conv(x).flatten(1) @ self.scale  # own op: 1352 * 1352 MACs

        def report_macs(self, inputs, output):
            return 7

    report = describe(nn.Sequential(Block()))
    layers = {layer.name: layer for layer in report.layers}
    assert layers["0"].macs == 7
    assert layers["0.conv"].macs == 2 * 26 * 26 * 9
    assert report.macs == 7 + 2 * 26 * 26 * 9 == sum(layer.macs for layer in report.layers)


# --- describe_model: the report and the ratios to the standard conv net ---------------------


def test_describe_model_gives_ratios_for_conv_variants_only():
    from omegaconf import OmegaConf

    from convexp.introspect import describe_model
    from convexp.models import build_model

    fields = {"kernel_size": 3, "dilation": 2, "channels": [4, 8], "padding": "same",
              "norm": "batch", "activation": "relu", "pool": "max", "head": "flatten",
              "dropout": 0.0}
    separable = OmegaConf.create({"name": "depthwise_dilated", **fields})
    report, ratios = describe_model(separable)
    standard = describe(build_model(OmegaConf.create({"name": "standard", **fields})))
    assert report.params < standard.params and report.macs < standard.macs
    assert ratios == {"param_ratio_vs_standard": report.params / standard.params,
                      "macs_ratio_vs_standard": report.macs / standard.macs}
    book_report, book_ratios = describe_model(OmegaConf.create({"name": "book_cnn"}))
    assert book_report.params == 24_496 and book_ratios == {}


def test_the_standard_reference_is_described_once_per_configuration(monkeypatch):
    """A sweep's seeds share a configuration: the standard net it is compared with is built
    and described once per process, with the same ratios each time."""
    from convexp import introspect
    from convexp.api import compose_config

    introspect._standard_cost.cache_clear()
    built = []
    real_build = introspect.build_model
    monkeypatch.setattr(introspect, "build_model",
                        lambda cfg, *a, **k: built.append(cfg.name) or real_build(cfg, *a, **k))
    cfg = compose_config(["model=depthwise_dilated", "model.kernel_size=5"]).model
    first = introspect.describe_model(cfg)
    second = introspect.describe_model(cfg)
    assert built == ["depthwise_dilated", "standard", "depthwise_dilated"]
    assert first[1] == second[1] and 0 < first[1]["macs_ratio_vs_standard"] < 1
    other = compose_config(["model=depthwise_dilated", "model.kernel_size=3"]).model
    introspect.describe_model(other)
    assert built[-2:] == ["depthwise_dilated", "standard"]  # another configuration: described


def test_theoretical_holes_of_a_custom_stack_and_of_a_model_without_a_spatial_map():
    # Two 3x3 convs at dilation 2 (any model, no `features`): offsets -4..4 in steps of 2
    # reach 25 of the 9x9 RF's 81 pixels; 1 then 2 (hybrid) reach all 49 of the 7x7.
    from convexp.introspect import reachable_inputs, rf_holes_theory

    def stack(d1, d2):
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=d1, dilation=d1), nn.ReLU(),
                             nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=d2, dilation=d2))

    gridded = stack(2, 2)
    assert describe(gridded).receptive_field == 9
    assert reachable_inputs(gridded).sum() == 25
    assert rf_holes_theory(gridded) == pytest.approx(56 / 81)
    assert describe(stack(1, 2)).rf_holes_theory == 0.0
    # A zeroed tap is no path: the centre tap alone of the second conv leaves the first's 3x3
    sparse = stack(1, 2)
    with torch.no_grad():
        sparse[3].weight.zero_()
        sparse[3].weight[:, :, 1, 1] = 1.0
    assert reachable_inputs(sparse).sum() == 9
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert describe(mlp).rf_holes_theory is None  # no spatial feature map
