"""A user's own conv design, trained and compared by convexp without changing convexp.

`tiny_net` is built from *ghost convs* (GhostNet, Han et al., CVPR 2020): an ordinary conv makes
half of a block's output channels, and a cheap depthwise 3x3 conv of those makes the other half.
Here the cheap conv is dilated, so each block sees further for almost no extra cost.

convexp finds the builder through the `_target_` of `examples/conf/model/tiny_net.yaml`
(`_target_: my_models.tiny_net`) and calls it as it calls a registered builder:
`tiny_net(cfg, image_shape=(C, H, W), num_classes=10)`, where `cfg` is the `model` node of the
composed config (so `model.width=32` on the command line reaches `cfg.width`).

Run it from the repository root. `PYTHONPATH=examples` makes `my_models` importable in the
main process and in every launcher's workers; `--config-dir examples/conf` adds
`examples/conf/model/tiny_net.yaml` to the `model` group:

    export PYTHONPATH=examples
    python -m convexp --config-dir examples/conf model=tiny_net mode=summary  # its layers
    python -m convexp --config-dir examples/conf model=tiny_net debug=fast    # a quick run
    # next to convexp's own designs, 3 seeds each, then one table
    python -m convexp -m --config-dir examples/conf \
        model=tiny_net,standard,depthwise_dilated seed=0,1,2
    python -m convexp.compare outputs/multirun/DATE/TIME
    # the same sweep on 2 local processes (joblib), or through submitit
    python -m convexp -m --config-dir examples/conf model=tiny_net seed=0,1 \
        hydra/launcher=joblib hydra.launcher.n_jobs=2
    python -m convexp -m --config-dir examples/conf model=tiny_net seed=0,1 \
        hydra/launcher=submitit_local
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class GhostConv(nn.Module):
    """`out_channels` feature maps for about half the cost of a dense conv: a dense conv makes
    half of them, a depthwise (one filter per channel) dilated 3x3 conv of those the rest."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 2):
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"GhostConv needs an even out_channels, got {out_channels}")
        half = out_channels // 2
        self.primary = nn.Conv2d(in_channels, half, kernel_size, padding=kernel_size // 2,
                                 bias=False)
        self.cheap = nn.Conv2d(half, half, 3, padding=dilation, dilation=dilation,
                               groups=half, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], dim=1)


def ghost_block(in_channels: int, out_channels: int, dilation: int) -> nn.Sequential:
    """A ghost conv, then BatchNorm, ReLU and 2x2 max-pooling, as in convexp's own blocks."""
    return nn.Sequential(OrderedDict(
        conv=GhostConv(in_channels, out_channels, dilation=dilation),
        norm=nn.BatchNorm2d(out_channels), act=nn.ReLU(), pool=nn.MaxPool2d(2)))


def tiny_net(cfg, image_shape=(1, 28, 28), num_classes=10) -> nn.Module:
    """Two ghost blocks (`cfg.width`, then twice as many channels), then a linear classifier
    on the flattened feature map."""
    channels, height, width = image_shape
    w = int(cfg.width)
    return nn.Sequential(OrderedDict(
        block1=ghost_block(channels, w, cfg.dilation),
        block2=ghost_block(w, 2 * w, cfg.dilation),
        flatten=nn.Flatten(),
        classifier=nn.Linear(2 * w * (height // 4) * (width // 4), num_classes)))
