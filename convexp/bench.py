"""Training throughput: convexp's runner against the textbook's loop and a plain DataLoader loop.

    python -m convexp.bench                      # every model x every loop, 3 repeats
    python -m convexp.bench --quick --models book_cnn --loops textbook,convexp
    python -m convexp.bench --time-to-accuracy --no-throughput

Every (model, loop) measurement runs in a fresh subprocess (`python -m convexp.bench --worker
SPEC`), so peak memory and compile caches belong to that measurement alone: W warm-up steps
(compilation included) are timed apart as `warmup_s`, then N steps are timed for samples/s.
The whole model x loop grid is repeated R times, the loop order rotated each time, so machine
noise shows up as the spread between min and max. benchmarks/README.md explains each loop.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from convexp._format import si, text_table
from convexp.api import compose_config
from convexp.atomic import atomic_write_json
from convexp.auto import resolve_auto
from convexp.data import load_dataset
from convexp.introspect import describe
from convexp.models import build_model
from convexp.paths import CONFIG_DIR
from convexp.runner import Runner
from convexp.system import keep_freed_memory, sync

LOOPS = ("textbook", "dataloader", "convexp", "convexp-fast")
MODEL_ORDER = ("book_cnn", "standard", "dilated", "depthwise_separable", "depthwise_dilated")
IMAGE_SHAPE = (1, 28, 28)  # MNIST: the benchmark always trains on the bundled MNIST
BASE_OVERRIDES = ["logger=none", "trainer.progress=false"]
TEXTBOOK_LR = 1e-4
RESULT_PREFIX = "BENCH-RESULT "

# convexp-fast tries each override set briefly per model and keeps the fastest.
FAST_CANDIDATES = {
    "cpu": [
        ["trainer.compile=false", "trainer.channels_last=true"],
        ["trainer.compile=false", "trainer.channels_last=false"],
        ["trainer.compile=true", "trainer.channels_last=true"],
        ["trainer.compile=true", "trainer.channels_last=false"],
    ],
    "cuda": [
        ["trainer.compile=true", "trainer.channels_last=true"],
        ["trainer.compile=true", "trainer.channels_last=false"],
        ["trainer.compile=true", "trainer.channels_last=true", "trainer.precision=bf16"],
        ["trainer.compile=true", "trainer.channels_last=false", "trainer.precision=bf16"],
    ],
}
DEFAULT_STEPS = {"cpu": 100, "cuda": 500}
DEFAULT_TTA_RECIPES = [[], ["model=depthwise_dilated"]]
# --quick shrinks the time-to-accuracy runs to a smoke test (99% is then out of reach).
QUICK_TTA_OVERRIDES = ["data.train_size=2000", "data.test_size=1000", "trainer.max_epochs=1"]


# =============================================================================================
# The worker: one measurement, in its own process
# =============================================================================================


def peak_memory_mb(device) -> float:
    """Peak CUDA memory allocated on CUDA; peak resident set size of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


def compose(model: str, batch_size: int, overrides: list[str]):
    return compose_config([f"model={model}", f"data.batch_size={batch_size}",
                           *BASE_OVERRIDES, *overrides])


def forever(make_iterator):
    """Batches from `make_iterator(epoch)`, one epoch after another, without end."""
    for epoch in itertools.count():
        yield from make_iterator(epoch)


def textbook_loop(cfg, model, data, device):
    """The chapter's loop: a float32 numpy copy of the training set in [0, 1], sliced in stored
    order and copied with torch.tensor each step; eager model, plain SGD, cross-entropy."""
    batch_size = cfg.data.batch_size
    x_train = data.train.images.numpy().astype(np.float32)
    x_train /= 255.0
    y_train = data.train.labels.numpy()
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=TEXTBOOK_LR)
    loss_fn = nn.CrossEntropyLoss()
    starts = forever(lambda epoch: range(0, len(x_train), batch_size))

    def step() -> int:
        start = next(starts)
        images = torch.tensor(x_train[start : start + batch_size]).to(device)
        labels = torch.tensor(y_train[start : start + batch_size]).to(device)
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return labels.shape[0]

    return step


def dataloader_loop(cfg, model, data, device):
    """A plain PyTorch loop: DataLoader over a TensorDataset of normalised float32 images,
    shuffled; eager model, the same SGD as the textbook."""
    images = data.train.images.float().div_(255.0).sub_(cfg.data.mean).div_(cfg.data.std)
    loader = DataLoader(TensorDataset(images, data.train.labels),
                        batch_size=cfg.data.batch_size, shuffle=True)
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=TEXTBOOK_LR)
    batches = forever(lambda epoch: loader)

    def step() -> int:
        images, labels = next(batches)
        images, labels = images.to(device), labels.to(device)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return labels.shape[0]

    return step


def runner_batches(runner):
    """The batches Runner.fit trains on, epoch after epoch (seeded order and augmentation)."""
    return forever(runner.loader.epoch)


def make_runner(cfg, model, data, device, out_dir):
    auto = resolve_auto(cfg.trainer, device, model)
    runner = Runner(cfg, model, data, device, out_dir=out_dir, precision=auto.precision,
                    compile=auto.compile)
    runner.model.train()
    return runner


def runner_loop(cfg, model, data, device, out_dir):
    """convexp's own per-step path: on-device batch slicing, normalisation, the train step."""
    runner = make_runner(cfg, model, data, device, out_dir)
    batches = runner_batches(runner)

    def step() -> int:
        images, labels = next(batches)
        runner.train_step(images, labels)
        return labels.shape[0]

    settings = {"compiled": runner.compiled, "channels_last": bool(cfg.trainer.channels_last),
                "precision": runner.precision,
                "optimizer": cfg.optimizer.name, "scheduler": cfg.scheduler.name}
    return step, settings


def lengthen_schedule(cfg, train_size: int, steps_needed: int) -> bool:
    """LR schedulers such as OneCycle refuse to step past their length: stretch max_epochs so
    the schedule covers the warm-up and timed steps (the cost of a step does not change)."""
    steps_per_epoch = max(1, train_size // cfg.data.batch_size)
    if cfg.trainer.max_steps is None and steps_per_epoch * cfg.trainer.max_epochs < steps_needed:
        cfg.trainer.max_epochs = -(-steps_needed // steps_per_epoch) + 1
        return True
    return False


def time_steps(step, warmup: int, steps: int, device) -> dict:
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - start
    samples = 0
    start = time.perf_counter()
    for _ in range(steps):
        samples += step()
    sync(device)
    seconds = time.perf_counter() - start
    return {"warmup_s": warmup_s, "seconds": seconds, "samples": samples, "steps": steps,
            "samples_per_s": samples / seconds}


def measure_throughput(spec: dict) -> dict:
    """One (model, loop) measurement as described by `spec` (see `throughput_spec`)."""
    loop, device = spec["loop"], torch.device(spec["device"])
    tuned = keep_freed_memory() if spec["tune_malloc"] else False
    rss_baseline_mb = peak_memory_mb(torch.device("cpu"))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = compose(spec["model"], spec["batch_size"], spec["overrides"])
    data = load_dataset(cfg.data, cfg.seed)
    schedule_stretched = lengthen_schedule(cfg, len(data.train), spec["warmup"] + spec["steps"])
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, IMAGE_SHAPE)
    settings = {}
    with tempfile.TemporaryDirectory(prefix="convexp-bench-") as out_dir:
        if loop == "textbook":
            step = textbook_loop(cfg, model, data, device)
        elif loop == "dataloader":
            step = dataloader_loop(cfg, model, data, device)
        else:
            step, settings = runner_loop(cfg, model, data, device, out_dir)
        timing = time_steps(step, spec["warmup"], spec["steps"], device)
    return {
        **timing, **settings,
        "peak_memory_mb": peak_memory_mb(device),
        "peak_rss_mb": peak_memory_mb(torch.device("cpu")),
        "rss_baseline_mb": rss_baseline_mb,
        "malloc_tuned": tuned,
        "schedule_stretched": schedule_stretched,
        "threads": torch.get_num_threads(),
    }


def measure_time_to_accuracy(spec: dict) -> dict:
    """Train one recipe with the runner's step, evaluating the test set every
    `evals_per_epoch`-th of an epoch (evaluation off the clock), until `target` accuracy or
    the recipe's max_epochs."""
    device = torch.device(spec["device"])
    tuned = keep_freed_memory() if spec["tune_malloc"] else False
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = compose_config([*spec["overrides"], *BASE_OVERRIDES])
    data = load_dataset(cfg.data, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, IMAGE_SHAPE)
    with tempfile.TemporaryDirectory(prefix="convexp-bench-") as out_dir:
        runner = make_runner(cfg, model, data, device, out_dir)
        per_epoch, batches = runner.steps_per_epoch, runner_batches(runner)
        eval_every = max(1, per_epoch // spec["evals_per_epoch"])
        evals, train_s, first_step_s, step, reached = [], 0.0, None, 0, False
        start = time.perf_counter()
        while step < runner.total_steps and not reached:
            images, labels = next(batches)
            runner.train_step(images, labels)
            step += 1
            if step == 1:
                sync(device)
                first_step_s = time.perf_counter() - start
            if step % eval_every == 0 or step % per_epoch == 0 or step == runner.total_steps:
                sync(device)
                train_s += time.perf_counter() - start  # the clock stops for evaluation
                _, acc = runner.evaluate(runner.data.test)
                evals.append({"step": step, "epoch": step / per_epoch, "train_s": train_s,
                              "test_acc": acc})
                reached = acc >= spec["target"]
                start = time.perf_counter()
    last = evals[-1]
    return {
        "reached": reached, "target": spec["target"], "train_s": train_s, "steps": step,
        "epochs": step / per_epoch, "test_acc": last["test_acc"],
        "best_test_acc": max(e["test_acc"] for e in evals), "first_step_s": first_step_s,
        "eval_every_steps": eval_every, "evals": evals, "max_epochs": cfg.trainer.max_epochs,
        "batch_size": cfg.data.batch_size, "model": cfg.model.name,
        "optimizer": cfg.optimizer.name, "scheduler": cfg.scheduler.name,
        "compiled": runner.compiled, "peak_memory_mb": peak_memory_mb(device),
        "peak_rss_mb": peak_memory_mb(torch.device("cpu")),
        "malloc_tuned": tuned, "threads": torch.get_num_threads(),
    }


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    measure = measure_time_to_accuracy if spec["kind"] == "tta" else measure_throughput
    result = measure(spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# =============================================================================================
# The driver: plan the grid, run each measurement in a subprocess, summarise
# =============================================================================================


def run_worker(spec: dict, timeout: float, cache_dir: str | None = None) -> dict:
    """Run one measurement in a fresh `python -m convexp.bench --worker` process, with an empty
    torch.compile cache of its own (or `cache_dir`, to share one); returns its result, or
    {"error": ...}."""
    with contextlib.ExitStack() as stack:
        cache = cache_dir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="convexp-bench-cache-"))
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache,
               "TRITON_CACHE_DIR": str(Path(cache) / "triton")}
        cmd = [sys.executable, "-m", "convexp.bench", "--worker", json.dumps(spec)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return {"error": f"worker exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"}


def throughput_spec(args, model: str, loop: str, overrides: list[str], steps: int) -> dict:
    return {"kind": "throughput", "model": model, "loop": loop, "overrides": overrides,
            "batch_size": args.batch_size, "warmup": args.warmup, "steps": steps,
            "device": args.device, "tune_malloc": tunes_malloc(args.tune_malloc, loop)}


def tunes_malloc(setting: str, loop: str) -> bool:
    """`convexp`: as shipped, only convexp's own process tunes malloc; `all` or `none`."""
    return setting == "all" or (setting == "convexp" and loop.startswith("convexp"))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def describe_result(result: dict) -> str:
    if "error" in result:
        last_line = (result["error"].strip().splitlines() or [""])[-1]
        return f"FAILED: {last_line}"
    return (f"{result['samples_per_s']:,.0f} samples/s, warm-up {result['warmup_s']:.1f} s, "
            f"peak {result['peak_memory_mb']:,.0f} MB")


def pick_fast_overrides(args, models: list[str]) -> tuple[dict, list]:
    """Per model, the fastest of the candidate override sets, each measured briefly."""
    candidates = args.fast_candidates
    if len(candidates) == 1:
        return {model: candidates[0] for model in models}, []
    chosen, probes = {}, []
    for model in models:
        best = None
        for overrides in candidates:
            spec = throughput_spec(args, model, "convexp-fast", overrides, args.probe_steps)
            result = run_worker(spec, args.timeout)
            probes.append({"model": model, "overrides": overrides, **result})
            log(f"probe {model} {' '.join(overrides)}: {describe_result(result)}")
            if "error" not in result and (best is None or
                                          result["samples_per_s"] > best[1]["samples_per_s"]):
                best = (overrides, result)
        chosen[model] = best[0] if best is not None else candidates[0]
    return chosen, probes


def grid_order(models: list[str], loops: list[str], repeat: int) -> list[tuple[str, str]]:
    """Models forward on even repeats, backward on odd ones; loops rotated by one each repeat,
    so no loop always runs first (or right after the same neighbour)."""
    models = models if repeat % 2 == 0 else models[::-1]
    shift = repeat % len(loops)
    rotated = loops[shift:] + loops[:shift]
    return [(model, loop) for model in models for loop in rotated]


def run_throughput(args, models: list[str], loops: list[str]) -> dict:
    fast_overrides, probes = ({}, [])
    if "convexp-fast" in loops:
        fast_overrides, probes = pick_fast_overrides(args, models)
    runs = []
    total = args.repeats * len(models) * len(loops)
    for repeat in range(args.repeats):
        for model, loop in grid_order(models, loops, repeat):
            overrides = fast_overrides.get(model, []) if loop == "convexp-fast" else []
            spec = throughput_spec(args, model, loop, overrides, args.steps)
            result = run_worker(spec, args.timeout)
            runs.append({"model": model, "loop": loop, "repeat": repeat,
                         "overrides": overrides, **result})
            log(f"[{len(runs)}/{total}] {model:<20} {loop:<13} repeat {repeat}: "
                f"{describe_result(result)}")
    return {"runs": runs, "fast_overrides": fast_overrides, "fast_probes": probes}


def model_sizes(models: list[str], batch_size: int) -> dict:
    """Parameters and MACs per image of each model, as convexp builds it."""
    sizes = {}
    for model in models:
        cfg = compose(model, batch_size, [])
        report = describe(build_model(cfg.model, IMAGE_SHAPE), IMAGE_SHAPE)
        sizes[model] = {"params": report.params, "macs": report.macs}
    return sizes


def summarise(runs: list[dict], models: list[str], loops: list[str], sizes: dict) -> list[dict]:
    """min/median/max samples/s per (model, loop), and each median over the textbook's."""
    rows = []
    for model in models:
        medians = {}
        for loop in loops:
            ok = [r for r in runs if r["model"] == model and r["loop"] == loop
                  and "error" not in r]
            failed = sum(1 for r in runs if r["model"] == model and r["loop"] == loop) - len(ok)
            row = {"model": model, "loop": loop, **sizes[model], "n": len(ok), "failed": failed}
            if ok:
                rates = [r["samples_per_s"] for r in ok]
                medians[loop] = statistics.median(rates)
                row.update(
                    samples_per_s_min=min(rates), samples_per_s_median=medians[loop],
                    samples_per_s_max=max(rates),
                    warmup_s_median=statistics.median(r["warmup_s"] for r in ok),
                    peak_memory_mb_max=max(r["peak_memory_mb"] for r in ok),
                    overrides=ok[0]["overrides"],
                )
            rows.append(row)
        for row in rows[-len(loops):]:
            if row["loop"] in medians and "textbook" in medians:
                row["vs_textbook"] = medians[row["loop"]] / medians["textbook"]
    return rows


def ratios_by_model(rows: list[dict]) -> dict:
    ratios = {}
    for row in rows:
        if row["loop"] != "textbook" and "vs_textbook" in row:
            ratios.setdefault(row["model"], {})[f"{row['loop']}/textbook"] = row["vs_textbook"]
    return ratios


def format_table(rows: list[dict], memory_label: str) -> str:
    header = ("model", "params", "MACs/img", "loop", "samples/s min", "median", "max",
              "vs textbook", "warmup_s", f"peak {memory_label} MB")
    lines = []
    for row in rows:
        if row["n"] == 0:
            numbers = ("failed",) + ("",) * 5
        else:
            ratio = row.get("vs_textbook")
            numbers = (f"{row['samples_per_s_min']:,.0f}", f"{row['samples_per_s_median']:,.0f}",
                       f"{row['samples_per_s_max']:,.0f}",
                       "" if ratio is None else f"{ratio:.2f}x",
                       f"{row['warmup_s_median']:.1f}", f"{row['peak_memory_mb_max']:,.0f}")
        lines.append((row["model"], si(row["params"]), si(row["macs"]), row["loop"], *numbers))
    return "\n".join(text_table(header, lines, right=set(range(len(header))) - {0, 3}))


def format_tta(results: list[dict]) -> str:
    lines = ["time to accuracy (training seconds; test-set evaluation off the clock):"]
    for r in results:
        if "error" in r:
            lines.append(f"  {r['recipe']}: FAILED")
            continue
        verdict = "reached" if r["reached"] else "NOT reached"
        lines.append(
            f"  {r['recipe']:<28} {verdict} {r['target']:.2%}: {r['train_s']:.1f} s, "
            f"{r['steps']} steps, {r['epochs']:.2f} epochs, test acc {r['test_acc']:.4f}, "
            f"peak {r['peak_memory_mb']:,.0f} MB")
    return "\n".join(lines)


# --- the machine -------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state() -> dict:
    repo = Path(__file__).resolve().parent.parent

    def git(*cmd) -> str | None:
        try:
            out = subprocess.run(["git", *cmd], cwd=repo, capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def machine_info(device: str) -> dict:
    cuda = device == "cuda"
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "device": device,
        "device_name": torch.cuda.get_device_name() if cuda else cpu_model(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
        "git": git_state(),
    }


def default_out_path(machine: dict) -> Path:
    date = machine["date"][:10]
    name = machine["device_name"] if machine["device"] == "cuda" else machine["host"]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "machine"
    path = Path("benchmarks") / "results" / f"{date}-{slug}.json"
    for n in itertools.count(2):
        if not path.exists():
            return path
        path = path.with_name(f"{date}-{slug}-{n}.json")


# --- the command line --------------------------------------------------------------------------


def available_models() -> list[str]:
    names = {p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml")}
    return [m for m in MODEL_ORDER if m in names] + sorted(names - set(MODEL_ORDER))


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def override_sets(text: str) -> list[list[str]]:
    """"a=1 b=[2,3]; a=3" -> [["a=1", "b=[2,3]"], ["a=3"]]: Hydra overrides, as on its CLI."""
    return [group.split() for group in text.split(";")]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m convexp.bench",
        description="Training samples/s of convexp's runner against the textbook loop and a "
                    "plain DataLoader loop, per model; optionally the time to 99% test accuracy.")
    p.add_argument("--models", type=comma_list, default=None,
                   help="comma-separated model files (default: all of conf/model)")
    p.add_argument("--loops", type=comma_list, default=list(LOOPS),
                   help=f"comma-separated, from {','.join(LOOPS)} (default: all)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per measurement (default: 100 on CPU, 500 on CUDA)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed warm-up steps, compilation included (default: 10)")
    p.add_argument("--repeats", type=int, default=None, help="grid repeats (default: 3)")
    p.add_argument("--batch-size", type=int, default=128, help="every loop's batch size")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--fast-candidates", type=override_sets, default=None,
                   help="convexp-fast override sets, ';' between sets and spaces within one, "
                        "e.g. 'trainer.compile=true trainer.channels_last=false; "
                        "trainer.compile=false'; the fastest "
                        "per model is kept (one set: used as is, no probing)")
    p.add_argument("--probe-steps", type=int, default=None,
                   help="timed steps when probing convexp-fast candidates (default: steps/4)")
    p.add_argument("--tune-malloc", choices=("convexp", "all", "none"), default="convexp",
                   help="apply `python -m convexp`'s malloc tuning in the convexp loops only "
                        "(as shipped; default), in every loop, or in none")
    p.add_argument("--time-to-accuracy", action="store_true",
                   help="also time training to --target test accuracy")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput grid")
    p.add_argument("--compile-cache", action="store_true",
                   help="also time compilation per model with an empty and a filled "
                        "torch.compile cache")
    p.add_argument("--tta-recipe", action="append", type=lambda s: s.split(), default=None,
                   metavar="OVERRIDES", help="a recipe for --time-to-accuracy, as space-separated "
                   "overrides ('' for the defaults); repeatable (default: the defaults, and "
                   "model=depthwise_dilated)")
    p.add_argument("--target", type=float, default=0.99,
                   help="test accuracy to reach (default: 0.99)")
    p.add_argument("--evals-per-epoch", type=int, default=4,
                   help="test-set evaluations per epoch during --time-to-accuracy")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON results (default: benchmarks/results/<date>-<host or GPU>.json)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test: 5 steps, 2 warm-up, 1 repeat, a tiny time-to-accuracy")
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    unknown = sorted(set(args.loops) - set(LOOPS))
    if unknown:
        p.error(f"unknown loop(s) {', '.join(unknown)}: choose from {', '.join(LOOPS)}")
    args.loops = [loop for loop in LOOPS if loop in args.loops]  # the table's order
    models = available_models()
    unknown = sorted(set(args.models or []) - set(models))
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(models)}")
    args.models = args.models or models
    if args.device == "auto":
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
    quick = args.quick
    args.steps = args.steps or (5 if quick else DEFAULT_STEPS[args.device])
    args.warmup = args.warmup if args.warmup is not None else (2 if quick else 10)
    args.repeats = args.repeats or (1 if quick else 3)
    args.probe_steps = args.probe_steps or max(3, args.steps // 4)
    args.tta_recipe = args.tta_recipe or DEFAULT_TTA_RECIPES
    args.fast_candidates = args.fast_candidates or FAST_CANDIDATES[args.device]
    return args


def run_compile_cache(args, models: list[str]) -> list[dict]:
    """Per model, two fresh processes that compile the runner's step with one shared, initially
    empty torch.compile cache: the first fills it (cold), the second reads it (warm)."""
    results = []
    for model in models:
        spec = throughput_spec(args, model, "convexp-fast", ["trainer.compile=true"],
                               args.probe_steps)
        with tempfile.TemporaryDirectory(prefix="convexp-bench-cache-") as cache:
            cold = run_worker(spec, args.timeout, cache)
            warm = run_worker(spec, args.timeout, cache)
        entry = {"model": model, "cold": cold, "warm": warm}
        if "error" not in cold and "error" not in warm:
            entry.update(cold_warmup_s=cold["warmup_s"], warm_warmup_s=warm["warmup_s"])
        results.append(entry)
        log(f"compile cache {model}: cold {describe_result(cold)}; warm {describe_result(warm)}")
    return results


def format_compile_cache(results: list[dict], warmup_steps: int) -> str:
    lines = [f"compile time (wall time of the {warmup_steps} warm-up steps, compiled), in a "
             "fresh process with an empty cache (cold) and with the cache the first one filled "
             "(warm):"]
    for r in results:
        if "cold_warmup_s" not in r:
            lines.append(f"  {r['model']:<20} FAILED")
            continue
        lines.append(f"  {r['model']:<20} cold {r['cold_warmup_s']:6.1f} s   "
                     f"warm {r['warm_warmup_s']:6.1f} s")
    return "\n".join(lines)


def run_time_to_accuracy(args) -> list[dict]:
    results = []
    for recipe in args.tta_recipe:
        overrides = [*recipe, *(QUICK_TTA_OVERRIDES if args.quick else [])]
        spec = {"kind": "tta", "overrides": overrides, "target": args.target,
                "evals_per_epoch": args.evals_per_epoch, "device": args.device,
                "tune_malloc": args.tune_malloc != "none"}
        result = {"recipe": " ".join(recipe) or "defaults", "overrides": overrides,
                  **run_worker(spec, args.timeout)}
        results.append(result)
        log(f"time to accuracy, {result['recipe']}: " + (
            "FAILED" if "error" in result else f"{result['train_s']:.1f} s"))
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    models = args.models
    machine = machine_info(args.device)
    args.out = args.out or default_out_path(machine)
    report = {"machine": machine,
              "settings": {k: v for k, v in vars(args).items() if k != "worker"}}
    failed = 0
    if not args.no_throughput:
        sizes = model_sizes(models, args.batch_size)
        results = run_throughput(args, models, args.loops)
        rows = summarise(results["runs"], models, args.loops, sizes)
        report.update(models=sizes, **results, summary=rows, ratios=ratios_by_model(rows))
        failed += sum(1 for r in results["runs"] if "error" in r)
    if args.compile_cache:
        report["compile_cache"] = run_compile_cache(args, models)
        failed += sum(1 for r in report["compile_cache"] if "cold_warmup_s" not in r)
    if args.time_to_accuracy:
        report["time_to_accuracy"] = run_time_to_accuracy(args)
        failed += sum(1 for r in report["time_to_accuracy"] if "error" in r)
    machine["load_average_end"] = list(os.getloadavg())

    out = atomic_write_json(args.out, report)
    print(f"\n{machine['device_name']} ({machine['device']}), torch {machine['torch']}, "
          f"{machine['cores']} cores, {machine['torch_threads']} threads, "
          f"batch {args.batch_size}, {args.steps} timed steps x {args.repeats} repeats")
    if "summary" in report:
        print(format_table(report["summary"], "GPU" if args.device == "cuda" else "RSS"))
        for model, overrides in report["fast_overrides"].items():
            print(f"convexp-fast {model}: {' '.join(overrides) or '(defaults)'}")
    if "compile_cache" in report:
        print(format_compile_cache(report["compile_cache"], args.warmup))
    if "time_to_accuracy" in report:
        print(format_tta(report["time_to_accuracy"]))
    print(f"wrote {out}")
    if failed:
        log(f"{failed} measurement(s) failed: see 'error' in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
