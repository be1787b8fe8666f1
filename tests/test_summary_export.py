"""Model introspection and export, end to end: `mode=summary` on the command line,
the introspection fields of a real run's summary.json, the receptive fields and the
parameter savings of the real variants against hand computations, and `mode=export` to ONNX
checked against PyTorch with onnxruntime on real MNIST digits.

tests/test_introspect.py covers convexp.introspect on hand-built nn.Sequential nets; this
file checks what the CLI, the runner and the exporter do with the models convexp builds.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_RUN, read_summary, run_cli

from convexp import api
from convexp.data import BUNDLED_MNIST, IMAGES_MAGIC, Normalizer, read_idx
from convexp.export import load_trained_model
from convexp.introspect import describe
from convexp.models import build_model
from convexp.schema import Normalize

# The two in-process training runs below: the textbook net and the depthwise-separable
# variant at its defaults (channels [32, 64], kernel 3, dilation 1, same padding, batch norm,
# max pool 2 after each block), on a small real-MNIST subset (debug=fast), without W&B.
BOOK = ["model=book_cnn", *FAST_RUN]
# The hand computations below are for channels [32, 64]: pinned, whatever the defaults are.
CHANNELS = "model.channels=[32,64]"
SEPARABLE = ["model=depthwise_separable", CHANNELS, *FAST_RUN]

INTROSPECTION_KEYS = ("params", "macs", "receptive_field")
RATIO_KEYS = ("param_ratio_vs_standard", "macs_ratio_vs_standard")


def build(overrides: list[str]) -> torch.nn.Module:
    """The model `python -m convexp <overrides>` builds, on 1x28x28 MNIST."""
    return build_model(api.compose_config(overrides).model, image_shape=(1, 28, 28))


def report_of(overrides: list[str]):
    return describe(build(overrides), (1, 28, 28))


@pytest.fixture(scope="module")
def book_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book") / "run"
    summary = api.train(BOOK, out)
    assert summary["status"] == "completed", summary
    return out


@pytest.fixture(scope="module")
def separable_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("separable") / "run"
    summary = api.train(SEPARABLE, out)
    assert summary["status"] == "completed", summary
    return out


# --- hand computations ----------------------------------------------------------------------


def hand_counts(separable: bool, channels=(32, 64), k=3, image=28, classes=10):
    """(params, MACs per image) of a variant with same padding, batch norm and max pool 2
    after every block, then flatten -> Linear. Per block: a standard conv has k*k*cin*cout
    weights, a separable one k*k*cin*m (depthwise, m filters per input channel) + cin*m*cout
    (pointwise), where the depth multiplier m is cout // cin on a 1-3 channel input (the
    first block on MNIST) and 1 after; both convs are bias-free because a BatchNorm (2*cout
    params: weight and bias) follows; each weight does one MAC per output pixel. Norms,
    activations and pools do no MACs."""
    params = macs = 0
    c_in, size = 1, image
    for c_out in channels:
        m = c_out // c_in if c_in <= 3 else 1
        conv = k * k * c_in * m + c_in * m * c_out if separable else k * k * c_in * c_out
        params += conv + 2 * c_out
        macs += size * size * conv
        c_in, size = c_out, size // 2
    flat = c_in * size * size
    params += flat * classes + classes
    macs += flat * classes
    return params, macs


# Standard [32, 64] k3: conv 1*32*9 = 288, BN 64, conv 32*64*9 = 18,432, BN 128,
# Linear 64*7*7*10 + 10 = 31,370 -> 50,282 params;
# MACs 28*28*288 = 225,792 + 14*14*18,432 = 3,612,672 + 31,360 = 3,869,824.
STANDARD_PARAMS, STANDARD_MACS = 50_282, 3_869_824
# Separable [32, 64] k3: depthwise 9*32 = 288 (multiplier 32 on the 1-channel input) +
# pointwise 32*32 = 1,024, BN 64, depthwise 288 + pointwise 2,048, BN 128, Linear 31,370
# -> 35,210 params; MACs 28*28*1,312 = 1,028,608 + 14*14*2,336 = 457,856 + 31,360 = 1,517,824.
SEPARABLE_PARAMS, SEPARABLE_MACS = 35_210, 1_517_824


def test_hand_formula_matches_the_worked_numbers():
    assert hand_counts(separable=False) == (STANDARD_PARAMS, STANDARD_MACS)
    assert hand_counts(separable=True) == (SEPARABLE_PARAMS, SEPARABLE_MACS)


# --- 1. mode=summary ------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    """A table row's cells: columns are separated by at least two spaces."""
    return re.split(r"\s{2,}", line.strip())


def _total(stdout: str, label: str) -> str:
    match = re.search(rf"^{label}\s+(\S+)", stdout, flags=re.MULTILINE)
    assert match, f"no '{label}' line in:\n{stdout}"
    return match.group(1)


def test_summary_mode_prints_the_table_totals_rf_and_ratios(tmp_path):
    overrides = ["model=depthwise_dilated", "model.dilation=3", CHANNELS]
    proc = run_cli([*overrides, "mode=summary"], tmp_path, check_rc=0)
    out = proc.stdout

    report = report_of(overrides)
    standard = report_of(["model=standard", CHANNELS])  # same channels and kernel 3
    assert (report.params, report.macs) == (SEPARABLE_PARAMS, SEPARABLE_MACS)  # dilation: free
    assert (standard.params, standard.macs) == (STANDARD_PARAMS, STANDARD_MACS)

    assert "depthwise_dilated: kernel 3, dilation 3, channels [32, 64]" in out
    header = next(line for line in out.splitlines() if line.startswith("name "))
    assert _cells(header) == ["name", "type", "kernel", "output", "params", "MACs"]

    # Every layer describe() reports, in order, as one row with all its columns.
    rows = [line for line in out.splitlines() if line.startswith(("features.", "flatten",
                                                                    "dropout", "classifier"))]
    expected_rows = [
        [layer.name, layer.type, *([layer.detail] if layer.detail else []),
         str(tuple(layer.output_shape)), f"{layer.params:,}", f"{layer.macs:,}"]
        for layer in report.layers
    ]
    assert [_cells(row) for row in rows] == expected_rows
    by_name = {cells[0]: cells for cells in map(_cells, rows)}
    # The first depthwise conv sees one input channel (groups 1, 32 filters), the second 32.
    assert by_name["features.0.conv.depthwise"][1:4] == ["Conv2d", "k3 d3 g1 s1",
                                                        "(32, 28, 28)"]
    assert by_name["features.1.conv.depthwise"][1:] == [
        "Conv2d", "k3 d3 g32 s1", "(32, 14, 14)", "288", f"{14 * 14 * 32 * 9:,}"]
    assert by_name["features.1.conv.pointwise"][1:] == [
        "Conv2d", "k1 d1 g1 s1", "(64, 14, 14)", "2,048", f"{14 * 14 * 32 * 64:,}"]
    assert by_name["features.1.pool"][1:4] == ["MaxPool2d", "k2 s2", "(64, 7, 7)"]
    assert by_name["classifier"][1:] == ["Linear", "(10,)", "31,370", "31,360"]

    # Totals equal describe() on the same model.
    assert _total(out, "params") == f"{report.params:,}" == "35,210"
    assert _total(out, "MACs per image") == f"{report.macs:,}" == "1,517,824"
    # k3 d3 spans 7: RF 7; pool: 7+1 = 8, jump 2; k3 d3: 8 + 6*2 = 20; pool: 20 + 1*2 = 22.
    assert report.receptive_field == 22
    assert "receptive field    RF 22x22" in out
    assert f"param ratio vs. standard: {report.params / standard.params:.3f}" in out
    assert f"macs ratio vs. standard: {report.macs / standard.macs:.3f}" in out
    assert "param ratio vs. standard: 0.700" in out  # 35,210 / 50,282
    assert "macs ratio vs. standard: 0.392" in out  # 1,517,824 / 3,869,824

    # A summary trains nothing: no checkpoint, no completed run record.
    assert not list(tmp_path.rglob("*.pt"))
    for summary in tmp_path.rglob("summary.json"):
        assert read_summary(summary.parent).get("status") != "completed"


# --- 2. summary.json of a real run ----------------------------------------------------------


def test_book_cnn_run_summary_records_its_introspection(book_run):
    summary = read_summary(book_run)
    report = report_of(BOOK)
    assert [summary[key] for key in INTROSPECTION_KEYS] == [
        report.params, report.macs, report.receptive_field]
    # Conv 7 -> 5 -> 3, no pooling: RF 7 + 4 + 2 = 13.
    assert (summary["macs"], summary["params"], summary["receptive_field"]) == (
        2_964_528, 24_496, 13)
    # Not a conv variant: no ratio against the standard net, and no conv fields it lacks.
    assert not {*RATIO_KEYS, "kernel_size", "dilation"} & set(summary), summary


def test_variant_run_summary_records_its_introspection(separable_run):
    summary = read_summary(separable_run)
    report = report_of(SEPARABLE)
    standard = report_of([*SEPARABLE, "model=standard"])
    assert [summary[key] for key in INTROSPECTION_KEYS] == [
        report.params, report.macs, report.receptive_field]
    assert summary["param_ratio_vs_standard"] == pytest.approx(report.params / standard.params)
    assert summary["macs_ratio_vs_standard"] == pytest.approx(report.macs / standard.macs)


# --- 3. receptive fields by hand ------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # k3: 3; pool 2: 3 + 1 = 4, jump 2; k3: 4 + 2*2 = 8; pool: 8 + 1*2 = 10.
        (["model=standard", CHANNELS], 10),
        # k3 d2 spans 5: 5; pool: 6, jump 2; k3 d2: 6 + 4*2 = 14; pool: 14 + 1*2 = 16.
        (["model=dilated", CHANNELS], 16),
        # Depthwise k5 d2 spans 9 (the 1x1 pointwise adds nothing): 9; pool: 10, jump 2;
        # k5 d2: 10 + 8*2 = 26; pool: 26 + 1*2 = 28.
        (["model=depthwise_dilated", "model.kernel_size=5", CHANNELS], 28),
        # Two 3x3 convs with dilation 2 and no pooling: 1 + 4 + 4 = 9.
        (["model=dilated", "model.pool=none", "model.channels=[8,8]"], 9),
        # Valid padding changes sizes, not the RF: k5: 5; pool: 6, jump 2; k5: 6 + 4*2 = 14;
        # pool: 14 + 1*2 = 16.
        (["model=standard", "model.kernel_size=5", "model.padding=valid", CHANNELS], 16),
        # The textbook net: 7 + (5 - 1) + (3 - 1) = 13.
        (["model=book_cnn"], 13),
    ],
    ids=["standard", "dilated", "depthwise_dilated_k5", "two_dilated_3x3", "valid_k5", "book"],
)
def test_receptive_field_of_the_real_variants(overrides, expected):
    assert report_of(overrides).receptive_field == expected


# --- 4. parameter saving --------------------------------------------------------------------


def test_separable_saving_vs_standard_matches_the_hand_formula(separable_run):
    summary = read_summary(separable_run)
    assert (summary["params"], summary["macs"]) == (SEPARABLE_PARAMS, SEPARABLE_MACS)
    assert summary["param_ratio_vs_standard"] == pytest.approx(
        SEPARABLE_PARAMS / STANDARD_PARAMS, rel=1e-12)  # 0.700
    assert summary["macs_ratio_vs_standard"] == pytest.approx(
        SEPARABLE_MACS / STANDARD_MACS, rel=1e-12)  # 0.392
    # The standard net the ratio is taken against, built for real.
    standard = report_of(["model=standard", CHANNELS])
    assert (standard.params, standard.macs) == (STANDARD_PARAMS, STANDARD_MACS)


# --- 5. export ------------------------------------------------------------------------------


def _mnist_batch(n: int) -> torch.Tensor:
    """The first n test digits, (n, 1, 28, 28) float, normalised as the runner does."""
    images = read_idx(BUNDLED_MNIST / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)[:n]
    normalize = Normalizer(Normalize(mean=0.1307, std=0.3081))
    return normalize(torch.from_numpy(images.copy()).unsqueeze(1))


def _check_onnx_against_torch(onnx_path: Path, checkpoint: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    onnx.checker.check_model(str(onnx_path), full_check=True)

    graph = onnx.load(str(onnx_path)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["logits"]
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")  # dynamic batch

    model, ckpt = load_trained_model(checkpoint)
    # The file says what it expects: input shape, normalisation and class count.
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    normalize = ckpt["config"]["data"]["normalize"]
    assert json.loads(meta["input_shape"]) == ["batch", 1, 28, 28]
    assert json.loads(meta["normalize_mean"]) == normalize["mean"] == 0.1307
    assert json.loads(meta["normalize_std"]) == normalize["std"] == 0.3081
    assert int(meta["num_classes"]) == ckpt["num_classes"] == 10
    assert meta["model"] == ckpt["config"]["model"]["name"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    images = _mnist_batch(7)
    for n in (1, 7):
        (logits,) = session.run(None, {"image": images[:n].numpy()})
        with torch.no_grad():
            expected = model(images[:n]).numpy()
        assert logits.shape == (n, 10)
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_export_writes_onnx_that_matches_pytorch(separable_run, book_run, tmp_path):
    """mode=export writes model.onnx beside the checkpoint, in the run dir it came from
    (whether checkpoint= names the run dir or the checkpoint file), and creates no new dir."""
    jobs = {
        "separable": ["mode=export", f"checkpoint={separable_run}"],
        "book": ["mode=export", f"checkpoint={book_run / 'checkpoints' / 'last.pt'}"],
        "missing": ["mode=export"],
    }
    for name in jobs:
        (tmp_path / name).mkdir()
    with ThreadPoolExecutor(len(jobs)) as pool:  # three CLI processes at once
        # No hydra.run.dir: convexp picks the run dir (the exported run's, for an export).
        futures = {name: pool.submit(run_cli, args, tmp_path / name, run_dir=False)
                   for name, args in jobs.items()}
        procs = {name: future.result() for name, future in futures.items()}

    for name, run_dir in (("separable", separable_run), ("book", book_run)):
        proc = procs[name]
        assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{proc.stderr[-4000:]}"
        onnx_path = run_dir / "model.onnx"
        assert onnx_path.is_file(), f"{name}: no model.onnx\n{proc.stdout}\n{proc.stderr}"
        assert f"wrote {onnx_path}" in proc.stdout
        assert list((tmp_path / name).iterdir()) == [], "the export created a new dir"
        # The exported run's record is untouched: still the completed training run.
        assert read_summary(run_dir)["status"] == "completed"
        _check_onnx_against_torch(onnx_path, run_dir / "checkpoints" / "last.pt")

    missing = procs["missing"]
    assert missing.returncode == 2, missing.stderr[-4000:]
    assert "convexp: error: mode=export needs checkpoint=" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert not list((tmp_path / "missing").rglob("*.onnx"))


@pytest.mark.parametrize("ignored", [["model.kernel_size=5"], ["data=fashion_mnist", "seed=3"]])
def test_export_refuses_overrides_it_would_ignore(tmp_path, ignored):
    """mode=export exports the checkpoint's own model with its own config: a model field, a
    dataset or a seed on the command line would silently change nothing. Refused before the
    checkpoint is read (this one does not exist)."""
    proc = run_cli(["mode=export", f"checkpoint={tmp_path / 'no_such_run'}", *ignored],
                   tmp_path, run_dir=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"convexp: error: mode=export exports the model its checkpoint recorded, "
                     f"with that checkpoint's config: {', '.join(ignored)} would change "
                     f"nothing. Drop {'it' if len(ignored) == 1 else 'them'}; to export another "
                     "model, train it and export its checkpoint"], proc.stderr
