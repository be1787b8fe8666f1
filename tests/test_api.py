"""convexp.api as a notebook uses it: a fresh run dir per call, Python exceptions for bad
input (never SystemExit), a result with the summary, the run dir and the trained model, and
docs/api.md's example, run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import read_summary

from convexp.api import TrainResult, compose_config, train
from convexp.data import Normalizer, load_dataset
from convexp.errors import ConfigError, ConvexpError, ModelBuildError

# A tiny real-MNIST run: a few steps, enough to check the plumbing, not the accuracy.
TINY = ["model=book_cnn", "debug=fast", "trainer.progress=false", "data.train_size=256",
        "data.val_size=128", "data.test_size=128"]
API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder: the default run dirs land under it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_each_call_gets_its_own_run_dir_and_a_trained_model(in_tmp):
    first, second = train(TINY), train(TINY)
    assert isinstance(first, TrainResult)
    assert first.run_dir != second.run_dir
    for result in (first, second):
        assert result.run_dir.resolve().is_relative_to(in_tmp / "outputs")
        assert result["status"] == "completed" and result.summary == read_summary(result.run_dir)
        assert dict(result) == result.summary and result.get("no such key") is None
    model = first.model
    assert isinstance(model, torch.nn.Module) and not model.training
    # The returned model is the one that was tested: its predictions on the same test images
    # give the summary's test accuracy.
    cfg = compose_config(TINY)
    test, normalize = load_dataset(cfg.data, cfg.seed).test, Normalizer(cfg.data.normalize)
    with torch.no_grad():
        correct = (model(normalize(test.images)).argmax(1) == test.labels).sum().item()
    assert correct / len(test) == first["test_acc"]

def test_no_checkpoint_no_model(in_tmp):
    result = train([*TINY, "trainer.checkpoint=false"])
    assert result["status"] == "completed" and result.model is None


def test_an_explicit_output_dir_that_holds_a_run_is_refused_naming_output_dir(in_tmp):
    first = train(TINY, in_tmp / "run")
    assert first.run_dir == in_tmp / "run"
    with pytest.raises(ConfigError, match=r"already holds another run's results.*output_dir"):
        train(TINY, in_tmp / "run")


@pytest.mark.parametrize(("overrides", "error", "needle"), [
    (["model.kernal_size=3"], ConfigError, "model.kernal_size: Key 'kernal_size' not in"),
    (["model=resnet"], ConfigError, "Could not find 'model/resnet'"),
    (["trainer.precision=fp16"], ConfigError, "trainer.precision: Invalid value 'fp16'"),
    (["data.normalize=null", "data.normalize.mean=0.5"], ConfigError, "below a node that is null"),
    (["model=depthwise_dilated", "model.padding=valid", "model.kernel_size=7",
      "model.dilation=4"], ModelBuildError, "collapses the feature map"),
])
def test_bad_input_raises_a_convexp_error_with_the_cli_line(in_tmp, capsys, overrides, error,
                                                            needle):
    with pytest.raises(error) as exc:
        train([*TINY[1:], *overrides])
    message = str(exc.value)
    assert isinstance(exc.value, ConvexpError)
    assert needle in message and "\n" not in message, message
    assert "convexp: error" not in capsys.readouterr().err  # raised, not printed


def _doc_example() -> str:
    """The Python block under docs/api.md's "Two configs, compared"."""
    section = API_DOC.read_text().split("## Two configs, compared", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_documented_comparison_runs_as_written(in_tmp, capsys):
    namespace: dict = {}
    exec(compile(_doc_example(), str(API_DOC), "exec"), namespace)  # noqa: S102
    runs = namespace["runs"]
    assert set(runs) == {"standard", "depthwise_dilated"}
    assert len({r.run_dir for r in runs.values()}) == 2
    for r in runs.values():
        assert r["status"] == "completed" and not r.model.training
        assert r["test_acc"] >= 0.9  # the quick preset's floor (conf/debug/fast.yaml)
    out = capsys.readouterr().out
    best = max(runs, key=lambda name: runs[name]["test_acc"])
    assert f"best: {best}, in {runs[best].run_dir}" in out
    assert all(f"{name:18} test acc" in out for name in runs)


def test_a_typo_in_your_own_models_fields_lists_the_fields_it_has():
    """A `_target_` model (examples/) has no schema dataclass: its YAML's keys are its
    fields, and a misspelt one is answered with them."""
    examples = Path(__file__).resolve().parents[1] / "examples" / "conf"
    with pytest.raises(ConfigError) as exc:
        compose_config([f"hydra.searchpath=[file://{examples}]", "model=tiny_net",
                        "model.widht=8"])
    assert str(exc.value) == ("model.widht: Key 'widht' is not in struct "
                              "(its fields: name, width, dilation)")


def test_the_apis_own_log_handler_shows_a_table_once_as_the_cli_does():
    """Records marked for the log file only (a per-layer table the console showed already)
    stay off the handler the API adds to the `convexp` logger, as off Hydra's console."""
    import io
    import logging

    from convexp.api import _log_to_stderr
    from convexp.task import _job_log_prefix

    root = logging.getLogger()
    saved, root.handlers = root.handlers, []
    try:
        with _log_to_stderr():
            (handler,) = logging.getLogger("convexp").handlers
            stream = io.StringIO()
            handler.setStream(stream)
            log = logging.getLogger("convexp.task")
            with _job_log_prefix(None):
                log.info("table for the log file", extra={"console": False})
                log.info("shown on the console", extra={"logfile": False})
                log.info("everywhere")
    finally:
        root.handlers = saved
    printed = stream.getvalue()
    assert "table for the log file" not in printed
    assert "shown on the console" in printed and "everywhere" in printed
