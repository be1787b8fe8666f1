"""An effective receptive field as numbers and pictures, with numpy and matplotlib only (the
sweep report, `convexp.compare`, imports no torch). `convexp.analysis` computes the ERF.

* :func:`erf_stats` - numbers that summarise an ERF: the side of the centred square holding 95%
  of its mass (``erf_95``), and, given the theoretical receptive field, the share of pixels in
  that window that get no gradient at all (``rf_holes``, the "gridding" of dilated convs).
* :func:`save_erf_png` / :func:`draw_erf` - the ERF as an image, with the theoretical RF square.

matplotlib is imported where a picture is drawn: it is the `report` extra, not a dependency.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

ZERO_TOL = 1e-6  # ERF values at or below this (the ERF's maximum is 1) count as no gradient
ERF_CMAP = "magma"
RF_COLOR = "#39d353"  # the theoretical RF square: a green that reads on magma's black and yellow


def _centroid(erf: np.ndarray) -> tuple[float, float]:
    total = erf.sum()
    if total <= 0:
        return (erf.shape[0] - 1) / 2, (erf.shape[1] - 1) / 2
    rows, cols = np.indices(erf.shape)
    return float((rows * erf).sum() / total), float((cols * erf).sum() / total)


def _window_start(support: np.ndarray, size: int, rf: int, centroid: float) -> int:
    """First index of a window of ``rf`` pixels holding the support along one axis."""
    if support.size == 0:
        return math.floor((size - 1) / 2 - (rf - 1) / 2 + 0.5)
    lo, hi = int(support[0]), int(support[-1])
    clipped_lo, clipped_hi = lo == 0, hi == size - 1
    if clipped_lo and not clipped_hi:  # the window runs off the top/left edge
        return hi - rf + 1
    if clipped_hi and not clipped_lo:
        return lo
    middle = (lo + hi) / 2 if not clipped_lo else centroid
    return math.floor(middle - (rf - 1) / 2 + 0.5)


def rf_window(erf: np.ndarray, rf: int, *, clip: bool = True) -> tuple[int, int, int, int]:
    """Where the theoretical receptive field of side ``rf`` lies on the input: (top, left,
    bottom, right), inclusive pixel indices, clipped to the image unless ``clip=False``.

    The window is centred on the ERF's non-zero support (on a conv net the support's extreme
    pixels are the extreme taps, holes or not); where the support touches an image edge, the
    window is anchored at the opposite end of the support.
    """
    rf = int(rf)
    nonzero = erf > ZERO_TOL
    centre = _centroid(erf)
    starts = [
        _window_start(np.flatnonzero(nonzero.any(axis=1 - axis)), erf.shape[axis], rf, centre[axis])
        for axis in (0, 1)
    ]
    top, left = starts
    bottom, right = top + rf - 1, left + rf - 1
    if clip:
        height, width = erf.shape
        top, left = max(top, 0), max(left, 0)
        bottom, right = min(bottom, height - 1), min(right, width - 1)
    return top, left, bottom, right


def _square_mass(cumsum: np.ndarray, top: int, left: int, side: int) -> float:
    height, width = cumsum.shape[0] - 1, cumsum.shape[1] - 1
    t, l_ = max(top, 0), max(left, 0)
    b, r = min(top + side, height), min(left + side, width)
    if b <= t or r <= l_:
        return 0.0
    return float(cumsum[b, r] - cumsum[t, r] - cumsum[b, l_] + cumsum[t, l_])


def erf_stats(erf: np.ndarray, rf: int | None = None, *, mass: float = 0.95) -> dict[str, Any]:
    """Summary numbers of an ERF (any non-negative (H, W) array).

    * ``erf_95``: side in pixels of the smallest square, centred on the ERF's centre of mass,
      that holds ``mass`` (95%) of the total (key ``erf_<percent>`` for another ``mass``);
      None for an all-zero ERF.
    * ``erf_support``: number of pixels with any gradient (> ``ZERO_TOL`` of the maximum).
    * ``erf_centre``: the centre of mass [row, col].

    With the theoretical receptive field ``rf`` (pixels, one side):

    * ``rf_window``: [top, left, bottom, right] of the RF on the input, clipped (:func:`rf_window`).
    * ``rf_fill``: the share of pixels in that window that get gradient; ``rf_holes`` =
      1 - ``rf_fill``: pixels inside the RF that the net never looks at. A 3x3 conv with
      dilation 2 sees 9 pixels of its 5x5 RF: ``rf_holes`` = 16/25. Dense nets give 0.
    * ``erf_outside_rf``: the share of the ERF's mass outside the window (0 for a correct RF).
    * ``erf_95_over_rf``: ``erf_95`` / ``rf``: how much of its theoretical RF a net really uses.
    """
    erf = np.asarray(erf, dtype=np.float64)
    if erf.ndim != 2:
        raise ValueError(f"erf must be 2-D (H, W), got shape {erf.shape}")
    erf = np.where(np.isfinite(erf), np.abs(erf), 0.0)
    key = f"erf_{round(mass * 100)}"
    peak = erf.max() if erf.size else 0.0
    nonzero = erf > ZERO_TOL * peak if peak > 0 else np.zeros(erf.shape, dtype=bool)
    total = float(erf.sum())
    centre = _centroid(erf)
    stats: dict[str, Any] = {
        key: None,
        "erf_support": int(nonzero.sum()),
        "erf_centre": [round(centre[0], 3), round(centre[1], 3)],
    }
    if total > 0:
        cumsum = np.zeros((erf.shape[0] + 1, erf.shape[1] + 1))
        cumsum[1:, 1:] = erf.cumsum(0).cumsum(1)
        target = mass * total * (1 - 1e-12)
        for side in range(1, 2 * max(erf.shape) + 1):
            top = math.floor(centre[0] - (side - 1) / 2 + 0.5)
            left = math.floor(centre[1] - (side - 1) / 2 + 0.5)
            if _square_mass(cumsum, top, left, side) >= target:
                stats[key] = side
                break
    if rf is not None:
        normalised = erf / peak if peak > 0 else erf
        top, left, bottom, right = rf_window(normalised, int(rf))
        inside = nonzero[top : bottom + 1, left : right + 1]
        fill = float(inside.mean()) if inside.size else 0.0
        mass_inside = float(erf[top : bottom + 1, left : right + 1].sum())
        stats.update(
            rf_window=[top, left, bottom, right],
            rf_fill=fill,
            rf_holes=1.0 - fill,
            erf_outside_rf=max(0.0, 1.0 - mass_inside / total) if total > 0 else 0.0,
            erf_95_over_rf=(stats[key] / int(rf)) if stats[key] is not None and rf else None,
        )
    return stats


def draw_erf(ax: Any, erf: np.ndarray, rf: int | None = None, *, vmax: float = 1.0) -> Any:
    """Draw ``erf`` on a matplotlib axes (shared scale 0..``vmax``), with the theoretical RF
    square (unclipped, so an RF larger than the image shows as a frame around it; where the
    square reaches the image's border, the axes widen by a pixel and a half so that its dashed
    line stays visible beside the image's edge). Returns the image, for a colorbar."""
    from matplotlib.patches import Rectangle

    image = ax.imshow(erf, cmap=ERF_CMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
    if rf:
        top, left, bottom, right = rf_window(np.asarray(erf), int(rf), clip=False)
        ax.add_patch(
            Rectangle(
                (left - 0.5, top - 0.5),
                right - left + 1,
                bottom - top + 1,
                fill=False,
                edgecolor=RF_COLOR,
                linewidth=1.2,
                linestyle="--",
                clip_on=True,
            )
        )
        height, width = np.asarray(erf).shape
        if top <= 0 or left <= 0 or bottom >= height - 1 or right >= width - 1:
            margin = 1.5
            ax.set_xlim(min(left, 0) - 0.5 - margin, max(right, width - 1) + 0.5 + margin)
            ax.set_ylim(max(bottom, height - 1) + 0.5 + margin, min(top, 0) - 0.5 - margin)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def save_erf_png(
    erf: np.ndarray, path: str | Path, title: str | None = None, rf: int | None = None
) -> Path:
    """A small PNG of the ERF (colour scale 0..1) with the theoretical RF square if ``rf`` is
    given. Uses matplotlib's object API (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    erf = np.asarray(erf, dtype=np.float64)
    fig = Figure(figsize=(3.4, 3.1), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = draw_erf(ax, erf, rf)
    stats = erf_stats(erf, rf)
    has_erf = stats["erf_95"] is not None
    caption = f"ERF 95%: {stats['erf_95']} px" if has_erf else "ERF: no gradient"
    if rf:
        caption += f"  |  RF {int(rf)} px (dashed)  |  holes {stats['rf_holes']:.0%}"
    ax.set_xlabel(caption, fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
