"""`python -m convexp` as a user runs it (a subprocess): config mistakes end the run at once with
one `convexp: error:` line that names the problem (exit 2), and mode=summary describes the model
without training.

The commands are independent and mostly spend their time importing torch and composing the
config, so they run two at a time (2 CPU cores) in one module-scoped fixture.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import FAST_RUN, assert_no_result, assert_one_clear_error, read_summary, run_cli

from convexp.api import compose_config
from convexp.models import build_model

# Each bad command, and strings its one error line must contain: the offending key or name,
# exactly, and what was expected. Hydra's composition errors (an unknown option, an unknown
# key, a wrong type) come before convexp's code runs; the others from the job's own checks.
BAD = {
    # The available options are listed.
    "unknown_model": (["model=nope"],
                      ["model/nope", "options: ", "book_cnn", "depthwise_dilated", "standard"]),
    # The key, the chosen option's schema, and the fields it does have.
    "misspelt_key": (["model.kernal_size=3"],
                     ["model.kernal_size", "not in 'ConvNetConfig'", "its fields: ",
                      "kernel_size"]),
    # The textbook net has no kernel_size: a key of another option is unknown.
    "book_cnn_kernel": (["model=book_cnn", "model.kernel_size=3"],
                        ["model.kernel_size", "not in 'BookCNNConfig'", "its fields: name"]),
    "wrong_type": (["trainer.max_epochs=abc"], ["trainer.max_epochs", "'abc'", "Integer"]),
    "non_positive_lr": (["optimizer.lr=0"], ["optimizer.lr=0.0", "must be > 0"]),
    # k7 d4 has an effective kernel of 25; block 0 leaves a 2x2 map for block 1.
    "collapsing": (
        ["model=depthwise_dilated", "model.padding=valid", "model.kernel_size=7",
         "model.dilation=4"],
        ["features.1", "2x2", "kernel_size=7", "dilation=4", "effective kernel size of 25"],
    ),
}
SUMMARY = ["mode=summary", "model=depthwise_dilated", "model.kernel_size=5"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    jobs = {name: args for name, (args, _) in BAD.items()} | {"summary": SUMMARY}
    dirs = {name: tmp_path_factory.mktemp(f"cli-{name}") for name in jobs}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(run_cli, [*args, *FAST_RUN], dirs[name], timeout=1200)
            for name, args in jobs.items()
        }
        return {name: (future.result(), dirs[name] / "run") for name, future in futures.items()}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_exits_nonzero_naming_the_problem(results, case):
    proc, run_dir = results[case]
    # One message (exit 2), not a Python traceback.
    assert_one_clear_error(proc.returncode, proc.stderr, *BAD[case][1])
    assert "Traceback" not in proc.stdout, proc.stdout
    # No run pretends to have completed.
    assert_no_result(run_dir)


def test_collapsing_model_records_a_failed_run(results):
    # Composition succeeded, so the job started: it leaves summary.json saying why it failed.
    proc, run_dir = results["collapsing"]
    assert_one_clear_error(proc.returncode, proc.stderr,
                           "convexp: error: block features.1 collapses")
    summary = read_summary(run_dir)
    assert summary["status"] == "failed"
    assert "features.1" in summary["reason"]
    assert summary.get("test_acc") is None


def test_mode_summary_prints_the_layer_table_without_training(results):
    proc, run_dir = results["summary"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    model = build_model(compose_config(SUMMARY).model)
    header = out.splitlines()[1].split()
    assert header == ["name", "type", "kernel", "output", "params", "MACs"]
    # One row per layer, with the built model's shapes: e.g. the dilated depthwise convs.
    for name, module in model.named_modules():
        if name and next(module.children(), None) is None:
            assert any(line.startswith(name + " ") for line in out.splitlines()), name
    assert "k5 d2 g32 s1" in out  # features.1's depthwise conv: kernel 5, dilation 2, 32 groups
    params = sum(p.numel() for p in model.parameters())
    assert f"params             {params:,}" in out
    assert "classifier" in out and "(3136,)" in out  # 64 channels x 7 x 7 into the Linear
    assert "param ratio vs. standard" in out
    # Nothing trained, nothing saved.
    assert "epoch" not in out
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "summary.json").exists()
    assert not (run_dir / "metrics.jsonl").exists()
