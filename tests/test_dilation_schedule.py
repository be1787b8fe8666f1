"""One dilation per block (`model.dilation=[1,2]`) and the gridding check of hybrid dilated
convolution (Wang et al. 2018): the theoretical holes of the receptive field, from the built
model, against the ERF of a net trained on real MNIST."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import FAST_RUN, read_summary, run_job_for_objective, run_job_until_exit
from omegaconf import OmegaConf

from convexp.erf_maps import ZERO_TOL, rf_window
from convexp.introspect import describe, reachable_inputs, rf_holes_theory
from convexp.models import build_model
from convexp.naming import config_label, run_name
from convexp.record import RF_HOLES_THEORY
from convexp.report.plots import heatmap_data
from convexp.report.render import erf_table, write_csv
from convexp.report.runs import aggregate
from convexp.variants import CONV_VARIANTS, dilation_text, variant_of

BASE = dict(kernel_size=3, padding="same", norm="batch", activation="relu", pool="max",
            head="flatten", dropout=0.0)


def _net(name="standard", dilation=1, channels=(32, 64), **fields):
    cfg = OmegaConf.create({**BASE, "name": name, "dilation": dilation,
                            "channels": list(channels), **fields})
    return build_model(cfg)


@pytest.mark.parametrize("name", CONV_VARIANTS)
@pytest.mark.parametrize(("dilation", "rf"), [([1, 2], 14), ([2, 1], 12), ([2, 2], 16),
                                              (2, 16), ([1, 1], 10)])
def test_receptive_field_of_a_schedule(name, dilation, rf):
    # [1, 2]: 3 -> pool -> 4 -> a 5-wide dilated kernel at stride 2 -> 12 -> pool -> 14
    model = _net(name, dilation)
    assert describe(model).receptive_field == rf
    convs = [block.conv for block in model.features]
    built = [getattr(c, "depthwise", c).dilation[0] for c in convs]
    assert built == (dilation if isinstance(dilation, list) else [dilation] * 2)


def test_a_schedule_names_its_variant_and_its_runs():
    assert variant_of("standard", [1, 1]) == "standard"
    assert variant_of("standard", [1, 2]) == "dilated"
    assert variant_of("depthwise_separable", [2, 1]) == "depthwise_dilated"
    assert variant_of("depthwise_dilated", [1, 1, 1]) == "depthwise_separable"
    assert config_label("dilated", 3, [1, 2]) == "dilated k3 d1-2"
    assert config_label("dilated", 3, 2) == "dilated k3 d2"  # an int as before
    assert run_name({"model": "standard", "kernel_size": 3, "dilation": [1, 2, 5],
                     "seed": 0}) == "dilated k3 d1-2-5 s0"
    assert dilation_text((1, 2)) == "1-2" and dilation_text(None) == "-"


@pytest.mark.parametrize(("override", "needle"), [
    ("model.dilation=[1,2,3]", "one int >= 1 per block (2 in model.channels)"),
    ("model.dilation=[1,0]", "one int >= 1 per block"),
    ("model.dilation=[]", "one int >= 1 per block"),
    ("model.dilation=1.5", "must be >= 1"),
])
def test_a_bad_schedule_is_one_line_and_exit_2(override, needle, tmp_path, capsys,
                                                monkeypatch):
    code, err = run_job_until_exit([override], tmp_path / "run", capsys,
                                   forbid_training=monkeypatch)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("convexp: error: ") and "model.dilation" in lines[0]
    assert needle in lines[0]


# --- the gridding check -----------------------------------------------------------------------

NO_POOL = dict(channels=(16, 32, 64), pool="none")  # three dilated layers, nothing between


@pytest.mark.parametrize("name", ["standard", "depthwise_separable"])
def test_equal_dilations_leave_holes_and_hybrid_rates_none(name):
    gridded = _net(name, [2, 2, 2], **NO_POOL)
    assert describe(gridded).receptive_field == 13
    reach = reachable_inputs(gridded)
    rows, cols = np.nonzero(reach)
    # offsets -6..6 in steps of 2 from the centre (14, 14): 7 x 7 of the 13 x 13 RF
    assert sorted(set(rows)) == sorted(set(cols)) == list(range(8, 21, 2))
    assert reach.sum() == 49
    assert rf_holes_theory(gridded) == pytest.approx(120 / 169)
    assert describe(gridded).rf_holes_theory == pytest.approx(120 / 169)
    hybrid = _net(name, [1, 2, 5], **NO_POOL)  # no common factor > 1
    assert describe(hybrid).receptive_field == 17
    assert reachable_inputs(hybrid)[6:23, 6:23].all()
    assert rf_holes_theory(hybrid) == 0.0
    assert rf_holes_theory(_net(name, [1, 1, 1], **NO_POOL)) == 0.0
    assert "holes in RF" in describe(gridded).format_table()
    assert "holes in RF" not in describe(hybrid).format_table()


def test_the_report_shows_a_schedule_and_both_hole_counts(tmp_path):
    jobs = []
    for dilation, holes in ((2, 0.0), ([2, 2], 0.0), ([1, 2], 0.25)):
        for seed in (0, 1):
            jobs.append({"status": "completed", "model": "standard", "seed": seed,
                         "variant": variant_of("standard", dilation), "kernel_size": 3,
                         "dilation": dilation, "channels": [32, 64], "receptive_field": 16,
                         "test_acc": 0.98 + seed / 100, "best_val_acc": 0.98,
                         RF_HOLES_THEORY: holes, "overrides": [f"model.dilation={dilation}"]})
    configs = aggregate(jobs)
    labels = sorted(c["label"] for c in configs)
    assert labels == ["dilated k3 d1-2", "dilated k3 d2", "dilated k3 d2-2"]
    _, _, dilations, _ = heatmap_data(configs)
    assert [dilation_text(d) for d in dilations] == ["1-2", "2", "2-2"]
    write_csv(configs, tmp_path / "c.csv")
    with open(tmp_path / "c.csv", newline="") as f:
        written = {row["dilation"] for row in csv.DictReader(f)}
    assert written == {"2", "[2, 2]", "[1, 2]"}  # a schedule as summary.json holds it
    rows = [{"config": c, "operator": c["operator"], "kernel": 3, "dilation": c["dilation"],
             "rf": 16, "erf": None, "stats": {"rf_holes": 0.5}, "n": 2} for c in configs]
    headers, cells = erf_table(rows)
    assert "holes in theory" in headers and "holes in RF" in headers
    shown = {row[2]: row[headers.index("holes in theory")] for row in cells}
    assert shown == {"2": "0%", "2-2": "0%", "1-2": "25%"}


@pytest.mark.slow
def test_trained_erf_is_zero_exactly_at_the_theoretical_holes(tmp_path):
    """Trained briefly on real MNIST (2,000 images): the ERF of the gridded net has no
    gradient exactly where no path of taps reaches; the hybrid one fills its RF."""
    for dilation, holes in (("[2,2,2]", 120 / 169), ("[1,2,5]", 0.0)):
        out = tmp_path / dilation.strip("[]").replace(",", "-")
        overrides = [*FAST_RUN, "model=depthwise_separable", "model.channels=[16,32,64]",
                     "model.pool=none", f"model.dilation={dilation}"]
        run_job_for_objective(overrides, out)
        summary = read_summary(out)
        assert summary["status"] == "completed", summary.get("reason")
        assert summary["dilation"] == json.loads(dilation)
        assert summary[RF_HOLES_THEORY] == pytest.approx(holes)
        assert summary["erf_rf_holes"] == pytest.approx(holes)
        erf = np.load(out / "erf.npy")
        model = build_model(OmegaConf.create({**BASE, "name": "depthwise_separable",
                                              "dilation": json.loads(dilation),
                                              "channels": [16, 32, 64], "pool": "none"}))
        reach = reachable_inputs(model)
        top, left, bottom, right = rf_window(erf, summary["receptive_field"])
        window = (slice(top, bottom + 1), slice(left, right + 1))
        assert ((erf > ZERO_TOL)[window] == reach[window]).all()
        assert not (erf > ZERO_TOL)[~reach].any()  # no gradient outside every path
