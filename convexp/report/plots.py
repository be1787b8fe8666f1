"""The report's figures, with matplotlib's object API on Agg canvases (no pyplot state):
the sweep's objective against each cost with its Pareto front (``acc_vs_*.png``), the
kernel x dilation heatmap per operator, and the grid of effective receptive fields.

matplotlib is imported where a figure is drawn: it is the ``report`` extra, not a dependency.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convexp._format import si
from convexp.erf_maps import draw_erf
from convexp.record import RF_HOLES_THEORY
from convexp.report.runs import erf_rows, objective_text, point_label
from convexp.report.runs import operators as _operators
from convexp.report.stats import NOISY_SPREAD, CostAxis, cost, cost_axes, noisy_costs, pareto_front
from convexp.variants import dilation_sort_key, dilation_text

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")


def _new_figure(size: tuple[float, float]) -> Any:
    """A matplotlib Figure on its own Agg canvas (no pyplot state), constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _dodged(points: list[dict], xs: list[float], axis: CostAxis) -> list[float]:
    """x positions with points of equal cost spread sideways, deterministically: ordered by
    dilation, then label; 1.2% of the x span (in decades on a log axis) apart."""
    if not xs:
        return []
    tx = [math.log10(x) for x in xs] if axis.log else list(xs)
    span = max(max(tx) - min(tx), 0.3 if axis.log else 0.05 * max(abs(v) for v in tx) or 1.0)
    step = 0.012 * span
    out = list(tx)
    groups: dict[float, list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault(x, []).append(i)
    for members in groups.values():
        members.sort(key=lambda i: (dilation_sort_key(points[i]["dilation"]), points[i]["label"]))
        for rank, i in enumerate(members):
            out[i] = tx[i] + (rank - (len(members) - 1) / 2) * step
    return [10**v for v in out] if axis.log else out


Segment = tuple[tuple[float, float], tuple[float, float]]


@dataclass
class _Labels:
    """Point labels of one axes, placed once the figure's layout is final."""

    ax: Any
    anchors: list[tuple[float, float]]  # the points, data coordinates
    texts: list[Any]
    radii: list[float]  # points: how far each point's marker (or ring) reaches
    segments: list[Segment]  # error bars and the Pareto staircase, data coordinates


def _place_labels(fig: Any, job: _Labels) -> None:
    """Move each label (first tried right of its point) to the nearest free spot: right or
    left of the point, stepping up and down by most of a label height; free means clear of
    other labels, markers, error bars and the front's staircase, and inside the axes. A grey
    leader line joins labels that moved away. Deterministic; works in display pixels."""
    ax = job.ax
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    from_px = ax.transData.inverted().transform
    axes_box = ax.get_window_extent(renderer)
    dpi_scale = fig.dpi / 72  # radii are in points
    obstacles = [
        (x - r * dpi_scale, y - r * dpi_scale, x + r * dpi_scale, y + r * dpi_scale)
        for (x, y), r in zip((to_px(a) for a in job.anchors), job.radii, strict=True)
    ]
    for start, end in job.segments:
        (x0, y0), (x1, y1) = to_px(start), to_px(end)
        obstacles.append(
            (min(x0, x1) - 1.5, min(y0, y1) - 1.5, max(x0, x1) + 1.5, max(y0, y1) + 1.5)
        )
    placed: list[tuple[float, float, float, float]] = []

    def free(rect: tuple[float, float, float, float]) -> bool:
        inside = (
            rect[0] >= axes_box.x0
            and rect[2] <= axes_box.x1
            and rect[1] >= axes_box.y0
            and rect[3] <= axes_box.y1
        )
        return inside and not any(
            rect[0] < o[2] and rect[2] > o[0] and rect[1] < o[3] and rect[3] > o[1]
            for o in placed + obstacles
        )

    anchors_px = [to_px(a) for a in job.anchors]
    order = sorted(range(len(job.texts)), key=lambda i: (-anchors_px[i][1], anchors_px[i][0]))
    for i in order:
        text = job.texts[i]
        px, py = anchors_px[i]
        gap = job.radii[i] * dpi_scale + 2
        box = text.get_window_extent(renderer)
        w, h = box.width + 2, box.height + 1
        best = None
        for step in range(0, 21):
            dy = (step + 1) // 2 * h * 0.8 * (1 if step % 2 else -1)
            for side in (1, -1):
                x0 = px + gap if side > 0 else px - gap - w
                rect = (x0, py + dy - h / 2, x0 + w, py + dy + h / 2)
                if free(rect):
                    best = (rect, side, dy)
                    break
            if best:
                break
        if best is None:  # crowded: keep it right of the point
            best = ((px + gap, py - h / 2, px + gap + w, py + h / 2), 1, 0.0)
        rect, side, dy = best
        placed.append(rect)
        edge = rect[0] if side > 0 else rect[2]
        text.set_position(from_px((edge, (rect[1] + rect[3]) / 2)))
        text.set_horizontalalignment("left" if side > 0 else "right")
        if abs(dy) > 0.5 * h:
            ax.plot(
                *zip(from_px((px, py)), from_px((edge, (rect[1] + rect[3]) / 2)), strict=True),
                color="0.6",
                linewidth=0.5,
                zorder=1,
            )


def _si_log_formatter() -> Any:
    """Log-axis tick labels as 2M, 30k: matplotlib's choice of which ticks to label."""
    from matplotlib.ticker import LogFormatter

    class SILogFormatter(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return si(x) if super().__call__(x, pos) else ""

    return SILogFormatter(labelOnlyBase=False)


def _draw_cost_panel(
    fig: Any, ax: Any, configs: list[dict], axis: CostAxis, styles: dict, fontsize: float
) -> None:
    points = [c for c in configs if c["objective_mean"] is not None and cost(c, axis)]
    xs = _dodged(points, [cost(c, axis) for c in points], axis)
    front = pareto_front(configs, axis)
    segments: list[Segment] = []
    for config, x in zip(points, xs, strict=True):
        color, marker = styles["color"][config["operator"]], styles["marker"][config["dilation"]]
        y, yerr = config["objective_mean"] * 100, (config["objective_std"] or 0) * 100
        xerr = (config.get(axis.std_field) or 0) if axis.std_field else 0
        ax.errorbar(
            [x],
            [y],
            yerr=[yerr] if yerr else None,
            xerr=[xerr] if xerr else None,
            marker=marker,
            color=color,
            markersize=6,
            linestyle="none",
            capsize=2,
            elinewidth=0.8,
            zorder=3,
        )
        segments += [((x, y - yerr), (x, y + yerr))] if yerr else []
        segments += [((x - xerr, y), (x + xerr, y))] if xerr else []
    front_xy = [(xs[points.index(c)], c["objective_mean"] * 100) for c in front]
    if front_xy:
        fx, fy = zip(*front_xy, strict=True)
        ax.step(fx, fy, where="post", color="0.25", linestyle="--", linewidth=0.9, zorder=2)
        ax.plot(
            fx,
            fy,
            linestyle="none",
            marker="o",
            markersize=13,
            markerfacecolor="none",
            markeredgecolor="black",
            markeredgewidth=1.0,
            zorder=4,
        )
        for (x0, y0), (x1, y1) in zip(front_xy, front_xy[1:], strict=False):
            segments += [((x0, y0), (x1, y0)), ((x1, y0), (x1, y1))]
    if axis.log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_si_log_formatter())
        ax.xaxis.set_minor_formatter(_si_log_formatter())
    ax.margins(x=0.12, y=0.12)
    ax.grid(True, which="both", alpha=0.25)
    note = "\n(equal costs spread sideways by dilation, d ascending left to right)"
    ax.set_xlabel(
        axis.label + (" (log scale)" if axis.log else "") + (note if axis.counted else ""),
        fontsize=fontsize + 1,
    )
    objective = objective_text(configs)
    ax.set_ylabel(f"{objective} (%)", fontsize=fontsize + 1)
    name = axis.label.split(" (")[0]
    noisy = f"\n(noisy: some seeds differ by > {NOISY_SPREAD:.0%})" if name in noisy_costs(
        configs) else ""
    ax.set_title(f"{objective.capitalize()} vs {name}{noisy}", fontsize=fontsize + 2)
    ax.tick_params(which="both", labelsize=fontsize)
    ax.autoscale_view()
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    texts = [
        ax.text(
            x,
            c["objective_mean"] * 100,
            point_label(c),
            fontsize=fontsize,
            va="center",
            color=styles["color"][c["operator"]],
            zorder=5,
        )
        for c, x in zip(points, xs, strict=True)
    ]
    anchors = [(x, c["objective_mean"] * 100) for c, x in zip(points, xs, strict=True)]
    radii = [7.0 if c in front else 3.5 for c in points]  # the ring, or the marker
    styles.setdefault("pending", []).append(_Labels(ax, anchors, texts, radii, segments))


def _legend_handles(styles: dict) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=color, marker="o", linestyle="none", label=operator)
        for operator, color in styles["color"].items()
    ]
    handles += [
        Line2D(
            [],
            [],
            color="0.4",
            marker=marker,
            linestyle="none",
            label=f"dilation {dilation_text(d)}" if d is not None else "no dilation (other model)",
        )
        for d, marker in styles["marker"].items()
    ]
    handles.append(
        Line2D(
            [],
            [],
            color="0.25",
            linestyle="--",
            marker="o",
            markersize=11,
            markerfacecolor="none",
            markeredgecolor="black",
            label="Pareto front",
        )
    )
    return handles


def _cost_styles(configs: list[dict]) -> dict:
    dilations = sorted({c["dilation"] for c in configs}, key=dilation_sort_key)
    return {
        "color": {op: f"C{i % 10}" for i, op in enumerate(_operators(configs))},
        "marker": {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(dilations)},
    }


def _finish_labels(fig: Any, styles: dict) -> None:
    jobs = styles.pop("pending", [])
    if jobs:
        fig.draw_without_rendering()  # finalise the constrained layout before measuring
    for job in jobs:
        _place_labels(fig, job)


def plot_costs(configs: list[dict], out_dir: Path) -> list[Path]:
    """``acc_vs_cost.png`` (all cost panels) and ``acc_vs_<cost>.png`` (one each)."""
    axes = cost_axes(configs)
    if not axes:
        return []
    ranked = [c for c in configs if c["objective_mean"] is not None]
    styles = _cost_styles(ranked)
    written = []
    ncols = 2 if len(axes) > 1 else 1
    nrows = math.ceil(len(axes) / ncols)
    fig = _new_figure((7.5 * ncols, 5.6 * nrows + 0.9))
    grid = fig.subplots(nrows, ncols, squeeze=False)
    for ax, axis in zip(grid.flat, axes, strict=False):
        _draw_cost_panel(fig, ax, configs, axis, styles, fontsize=7)
    for ax in list(grid.flat)[len(axes) :]:
        ax.set_visible(False)
    fig.legend(
        handles=_legend_handles(styles),
        loc="outside lower center",
        ncols=min(6, len(_legend_handles(styles))),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(
        f"{objective_text(configs).capitalize()} for its cost (mean ± std over seeds; black "
        "rings: Pareto front)",
        fontsize=11,
    )
    _finish_labels(fig, styles)
    written.append(out_dir / "acc_vs_cost.png")
    fig.savefig(written[-1], dpi=110)
    for axis in axes:
        fig = _new_figure((8.5, 6.4))
        _draw_cost_panel(fig, fig.add_subplot(), configs, axis, styles, fontsize=7.5)
        fig.legend(
            handles=_legend_handles(styles), loc="outside right center", fontsize=8, frameon=False
        )
        _finish_labels(fig, styles)
        written.append(out_dir / f"acc_vs_{axis.name}.png")
        fig.savefig(written[-1], dpi=120)
    return written


def heatmap_data(configs: list[dict]) -> tuple[list[str], list[int], list[int], dict]:
    """Operators, kernel sizes (rows), dilations (columns: every dilation of the sweep, for
    every operator) and, per operator, {(row, column): [configurations]} for the heatmap."""
    cells = [c for c in configs if None not in (c["kernel_size"], c["dilation"])]
    operators = _operators(cells)
    kernels = sorted({c["kernel_size"] for c in cells})
    dilations = sorted({c["dilation"] for c in cells}, key=dilation_sort_key)
    grids: dict[str, dict[tuple[int, int], list[dict]]] = {op: {} for op in operators}
    for c in cells:
        key = (kernels.index(c["kernel_size"]), dilations.index(c["dilation"]))
        grids[c["operator"]].setdefault(key, []).append(c)
    return operators, kernels, dilations, grids


def plot_heatmap(configs: list[dict], out_dir: Path) -> Path | None:
    """``heatmap.png``: kernel x dilation per operator, one shared colour scale."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    operators, kernels, dilations, grids = heatmap_data(configs)
    if not operators:
        return None
    cells = [c for grid in grids.values() for group in grid.values() for c in group]
    values = [c["objective_mean"] * 100 for c in cells if c["objective_mean"] is not None]
    norm = Normalize(min(values), max(values)) if values else Normalize(0, 100)
    if values and norm.vmin == norm.vmax:
        norm = Normalize(norm.vmin - 0.05, norm.vmax + 0.05)
    cmap = colormaps["viridis"].with_extremes(bad="0.88")
    ncols = min(len(operators), 3)
    nrows = math.ceil(len(operators) / ncols)
    width = ncols * (0.95 * len(dilations) + 1.0) + 1.3
    fig = _new_figure((max(width, 5.0), nrows * (0.8 * len(kernels) + 1.1) + 0.7))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for ax, op in zip(axes.flat, operators, strict=False):
        data = np.full((len(kernels), len(dilations)), np.nan)
        for (i, j), group in grids[op].items():
            done = [c for c in group if c["objective_mean"] is not None]
            if done:
                data[i, j] = max(c["objective_mean"] for c in done) * 100
        image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, norm=norm, aspect="auto")
        for (i, j), value in np.ndenumerate(data):
            group = grids[op].get((i, j), [])
            if math.isfinite(value):
                best = max(
                    (c for c in group if c["objective_mean"] is not None),
                    key=lambda c: c["objective_mean"],
                )
                r, g, b, _ = cmap(norm(value))
                color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                std = best["objective_std"]
                detail = f"±{std * 100:.2f} " if std is not None else ""
                detail += f"n={best['objective_n']}"
                detail += f"\nbest of {len(group)}" if len(group) > 1 else ""
                ax.text(
                    j,
                    i - 0.1,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    color=color,
                    fontsize=10,
                    fontweight="bold",
                )
                ax.text(
                    j,
                    i + 0.12,
                    detail,
                    ha="center",
                    va="top",
                    color=color,
                    fontsize=7.5,
                    linespacing=1.1,
                )
            elif group:
                ax.text(j, i, "failed", ha="center", va="center", color="0.3", fontsize=8)
            else:
                ax.text(j, i, "not run", ha="center", va="center", color="0.5", fontsize=7)
        ax.set_xticks(range(len(dilations)), [dilation_text(d) for d in dilations])
        ax.set_yticks(range(len(kernels)), [str(k) for k in kernels])
        ax.set_xlabel("dilation", fontsize=9)
        ax.set_ylabel("kernel size", fontsize=9)
        ax.set_title(op, fontsize=10)
    for ax in list(axes.flat)[len(operators) :]:
        ax.set_visible(False)
    if values:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9)
        bar.set_label(f"mean {objective_text(configs)} (%)", fontsize=9)
        bar.ax.yaxis.set_major_formatter("{x:.2f}")
    fig.suptitle(
        f"Mean {objective_text(configs)} (%) over seeds: one colour scale for all operators",
        fontsize=10,
    )
    path = out_dir / "heatmap.png"
    fig.savefig(path, dpi=120)
    return path


def plot_erf_grid(rows: list[dict], out_dir: Path) -> Path | None:
    """``erf.png``: rows = operator x kernel, columns = dilation; ERF arrays on one colour
    scale with the theoretical RF (dashed); saved PNGs where a job left no array."""
    if not rows:
        return None
    from matplotlib.image import imread


    row_keys = list(dict.fromkeys((r["operator"], r["kernel"]) for r in rows))
    col_keys = sorted({r["dilation"] for r in rows}, key=dilation_sort_key)
    fig = _new_figure((1.9 * len(col_keys) + 1.6, 2.0 * len(row_keys) + 0.9))
    axes = fig.subplots(len(row_keys), len(col_keys), squeeze=False)
    image = None
    cells = {}
    for r in rows:  # several configurations per cell (other settings): the best one
        cells.setdefault((r["operator"], r["kernel"], r["dilation"]), r)
    for i, (op, kernel) in enumerate(row_keys):
        for j, dilation in enumerate(col_keys):
            ax = axes[i, j]
            row = cells.get((op, kernel, dilation))
            if row is None:
                ax.set_axis_off()
                continue
            if row["erf"] is not None:
                image = draw_erf(ax, row["erf"], row["rf"])
            else:
                ax.imshow(imread(row["png"]))
                ax.set_xticks([])
                ax.set_yticks([])
            stats = row["stats"] or {}
            rf_text = f"RF {row['rf']} px" if row["rf"] else "RF ?"
            if row["erf"] is not None and row["rf"] and row["rf"] > max(row["erf"].shape):
                rf_text += " > image"
            bits = [rf_text]
            if stats.get("erf_95") is not None:
                bits.append(f"ERF95 {stats['erf_95']} px")
            theory = row["config"].get(RF_HOLES_THEORY)
            if stats.get("rf_holes") or theory:
                holes = f"{stats['rf_holes']:.0%}" if stats.get("rf_holes") is not None else "?"
                bits.append(f"holes {holes}" + (f" (theory {theory:.0%})" if theory else ""))
            model = str(row["config"]["model"])
            ax.set_title(
                f"k{kernel} d{dilation_text(dilation)}" if kernel is not None else model,
                fontsize=8,
                pad=2,
            )
            ax.set_xlabel(", ".join(bits), fontsize=7, labelpad=2)
            if j == 0 or all(cells.get((op, kernel, d)) is None for d in col_keys[:j]):
                ax.set_ylabel(f"{op}\nkernel {kernel}" if kernel is not None else op, fontsize=8)
    if image is not None:
        bar = fig.colorbar(
            image, ax=axes.ravel().tolist(), shrink=min(0.6, 2.5 / len(row_keys)), aspect=15
        )
        bar.set_label("ERF (normalised |gradient|)", fontsize=8)
    fig.suptitle("Effective receptive field (dashed: theoretical RF)", fontsize=10)
    path = out_dir / "erf.png"
    fig.savefig(path, dpi=110)
    return path


def write_plots(
    configs: list[dict], out_dir: Path, root: Path | None = None, erfs: list[dict] | None = None
) -> list[Path]:
    """Accuracy-for-its-cost panels, the shared-scale heatmap, and the ERF grid: from ``erfs``
    (:func:`erf_rows`) or else from ``root``, the multirun dir that the jobs' ``erf_npy`` and
    ``erf_png`` paths are relative to."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: skipping plots", file=sys.stderr)
        return []
    written = plot_costs(configs, out_dir)
    heatmap = plot_heatmap(configs, out_dir)
    erf = plot_erf_grid(erfs if erfs is not None else erf_rows(configs, root), out_dir)
    return written + [p for p in (heatmap, erf) if p is not None]


