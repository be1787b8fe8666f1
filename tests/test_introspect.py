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
