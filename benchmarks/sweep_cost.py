"""What one sweep costs on this machine, and where it goes.

    python benchmarks/sweep_cost.py [--jobs 4] [--train-size 10000] [--repeats 2] [--out FILE]
    python benchmarks/sweep_cost.py --from-sweep SWEEP_DIR [SWEEP_DIR ...] [--wall-s S] [--out FILE]

1. Per-job fixed costs, measured alone: process start and imports, data load with its md5
   check, describing the model (per-layer table and the standard-net ratios), the 10,000-image
   test pass, the ERF and latency analysis, W&B start-up (offline), and a whole `mode=summary`
   process for scale.
2. Training throughput of the same small sweep run as 1 job x all threads (Hydra's basic
   launcher) and as N jobs x 1 thread (joblib, n_jobs = cores): whole sweep wall time,
   alternating the two, `--repeats` times each.
3. Extrapolation of `experiment=kernel_dilation_sweep` (54 jobs): the measured per-job time of
   a default-recipe job of each operator and kernel (one epoch of the three, scaled), labelled
   as extrapolated.

Run it on a quiet machine. Results: a JSON file and a printed table.

`--from-sweep` measures nothing itself: it reads a finished sweep's records (summary.json and
metrics.jsonl of every job) and splits each job's wall time into training, validation and
checkpoints between epochs, set-up, the test pass and the analysis, per configuration and for
the whole sweep (`--wall-s`: the sweep command's own wall time, e.g. from /usr/bin/time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from convexp import record
from convexp.bench import cpu_model

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env or ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return elapsed


FIXED_COSTS = r'''
import json, sys, time
t0 = time.perf_counter()
import torch  # noqa
t_torch = time.perf_counter()
import convexp.task as task
from convexp.api import compose_config
t_imports = time.perf_counter()
cfg = compose_config(["logger=wandb", "logger.mode=offline"])
t_compose = time.perf_counter()
from convexp.data import load_dataset
data = load_dataset(cfg.data, 0)
t_data = time.perf_counter()
model = task.build_model(cfg.model, data.image_shape, data.num_classes)
from convexp.introspect import describe_model
report, ratios = describe_model(cfg.model, data.image_shape, data.num_classes, model)
t_describe = time.perf_counter()
from convexp.runner import Runner
from pathlib import Path
out = Path(sys.argv[1])
runner = Runner(cfg, model, data, torch.device("cpu"), out)
t_runner = time.perf_counter()
runner.evaluate(runner.data.test)
t_test = time.perf_counter()
from convexp.job import Job, JobContext
job = Job(JobContext(output_dir=out), out, {"variant": "standard", "kernel_size": 3, "dilation": 1})
from convexp.loggers import build_logger
job.logger = build_logger(cfg.logger, {}, out, job.run_id, "cost", None)
t_wandb = time.perf_counter()
job.logger.finish()
t_finish = time.perf_counter()
job.summary["receptive_field"] = report.receptive_field
task._analyse(job, runner)
t_analysis = time.perf_counter()
print(json.dumps({
    "import_torch_s": t_torch - t0, "import_convexp_s": t_imports - t_torch,
    "compose_s": t_compose - t_imports, "data_load_md5_s": t_data - t_compose,
    "build_and_describe_s": t_describe - t_data, "test_10k_s": t_test - t_runner,
    "wandb_init_offline_s": t_wandb - t_test, "wandb_finish_s": t_finish - t_wandb,
    "erf_and_latency_s": t_analysis - t_finish,
}))
'''


def fixed_costs(tmp: Path) -> dict:
    results = []
    for i in range(3):
        out = tmp / f"fixed{i}"
        out.mkdir()
        proc = subprocess.run([sys.executable, "-c", FIXED_COSTS, str(out)], cwd=tmp, env=ENV,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    median = {k: round(statistics.median(r[k] for r in results), 3) for k in results[0]}
    median["python_start_s"] = round(statistics.median(
        timed([sys.executable, "-c", "pass"], tmp) for _ in range(3)), 3)
    median["whole_summary_process_s"] = round(statistics.median(
        timed([sys.executable, "-m", "convexp", "mode=summary", "logger=none",
               f"hydra.run.dir={tmp / f'summary{i}'}"], tmp) for i in range(3)), 3)
    return median


def sweep_args(jobs: int, train_size: int) -> list[str]:
    kernels = ",".join(str(k) for k in (3, 5, 7, 3, 5, 7)[: max(1, jobs // 2)])
    return ["-m", "model=standard,depthwise_separable", f"model.kernel_size={kernels}",
            "model.dilation=2", "logger=none", "trainer.progress=false",
            f"data.train_size={train_size}", "data.val_size=2000", "trainer.max_epochs=1"]


def run_sweep(kind: str, args: list[str], tmp: Path, i: int) -> dict:
    sweep_dir = tmp / f"{kind}{i}"
    extra = [] if kind == "basic" else [
        "hydra/launcher=joblib", f"hydra.launcher.n_jobs={os.cpu_count()}"]
    wall = timed([sys.executable, "-m", "convexp", *args, *extra,
                  f"hydra.sweep.dir={sweep_dir}"], tmp)
    summaries = [json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")]
    return {"wall_s": round(wall, 2), "jobs": len(summaries),
            "train_time_s": round(sum(s["train_time_s"] for s in summaries), 2),
            "threads": sorted({s["threads"] for s in summaries}),
            "statuses": sorted({s["status"] for s in summaries})}


def extrapolate(tmp: Path) -> dict:
    """One default-recipe job per operator x kernel, one epoch of the three (dilation 2)."""
    per_job = {}
    for model in ("standard", "depthwise_separable"):
        for kernel in (3, 5, 7):
            run_dir = tmp / f"full-{model}-{kernel}"
            wall = timed([sys.executable, "-m", "convexp", f"model={model}",
                          f"model.kernel_size={kernel}", "model.dilation=2", "logger=none",
                          "trainer.progress=false", "trainer.max_epochs=1",
                          f"hydra.run.dir={run_dir}"], tmp)
            summary = json.loads((run_dir / "summary.json").read_text())
            # 3 epochs: the training and per-epoch validation scale, the rest does not.
            train = summary["train_time_s"]
            per_job[f"{model} k{kernel}"] = {
                "one_epoch_wall_s": round(wall, 2), "train_s": train,
                "three_epoch_job_s": round(wall + 2 * train * 1.05, 2)}
    jobs_each = 54 / len(per_job)  # 3 dilations x 3 seeds per operator x kernel
    total = sum(v["three_epoch_job_s"] for v in per_job.values()) * jobs_each
    return {"per_job": per_job, "sweep_54_jobs_one_at_a_time_s": round(total, 1)}


def split_job(summary: dict, job_dir: Path) -> dict:
    """Where one job's wall time went, from its own record."""
    wall, train = summary["wall_s"], summary["train_time_s"]
    parts = {k: summary.get(k) or 0.0 for k in ("setup_s", "test_s", "analysis_s")}
    epochs = [json.loads(line) for line in (job_dir / record.METRICS).read_text().splitlines()
              if line.strip()]
    # Between the end of one epoch's training and the next: the validation pass, the checkpoint,
    # the metrics line and the W&B log; plus W&B's start and finish.
    rest = wall - train - sum(parts.values())
    return {"wall_s": wall, "train_s": train, **parts, "val_ckpt_wandb_s": round(rest, 3),
            "outside_training_s": round(wall - train, 3), "epochs": len(epochs),
            "samples_per_s": summary.get(record.TRAIN_SAMPLES_PER_S)}


def from_sweep(sweep_dirs: list[Path], wall_s: float | None) -> dict:
    """The split of every job of one sweep, or of several parts of one (their first jobs each
    pay a process's imports and first data load)."""
    jobs, firsts = [], []
    root = Path(os.path.commonpath([Path(d).resolve() for d in sweep_dirs]))
    for sweep_dir in sweep_dirs:
        first = True
        for summary in record.load_summaries(sweep_dir):
            job_dir = Path(sweep_dir, summary[record.JOB_DIR])
            name = job_dir.resolve().relative_to(Path(root).resolve()).as_posix()
            if summary.get(record.STATUS) != record.COMPLETED:
                jobs.append({"job": name, "status": summary.get(record.STATUS)})
                continue
            label = (f"{summary.get('variant')} k{summary.get('kernel_size')} "
                     f"d{summary.get('dilation')}")
            jobs.append({"job": name, "config": label, "seed": summary.get("seed"),
                         "status": record.COMPLETED, **split_job(summary, job_dir)})
            if first:
                firsts.append(name)
                first = False
    done = [j for j in jobs if j["status"] == record.COMPLETED]
    # A sweep's first job also pays the process's imports and first data load.
    later = [j for j in done if j["job"] not in firsts]
    total = {k: round(sum(j[k] for j in done), 1) for k in
             ("wall_s", "train_s", "setup_s", "test_s", "analysis_s", "val_ckpt_wandb_s")}
    per_config: dict[str, list[dict]] = {}
    for j in done:
        per_config.setdefault(j["config"], []).append(j)
    return {
        "sweep_dir": ", ".join(map(str, sweep_dirs)), "jobs": len(jobs), "completed": len(done),
        "sweep_wall_s": wall_s,
        "outside_jobs_s": round(wall_s - total["wall_s"], 1) if wall_s else None,
        "sum_over_jobs": total,
        "first_job_outside_training_s": done[0]["outside_training_s"] if done else None,
        "later_jobs_outside_training_s": {
            "median": statistics.median(j["outside_training_s"] for j in later),
            "min": min(j["outside_training_s"] for j in later),
            "max": max(j["outside_training_s"] for j in later),
        } if later else None,
        "per_config": {c: {"jobs": len(js),
                           "wall_s_median": statistics.median(j["wall_s"] for j in js),
                           "samples_per_s_median": statistics.median(j["samples_per_s"]
                                                                     for j in js)}
                       for c, js in per_config.items()},
        "per_job": jobs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-sweep", type=Path, nargs="+", metavar="SWEEP_DIR",
                        help="split a finished sweep's job times from its records (several "
                        "dirs: the parts of one sweep); run nothing")
    parser.add_argument("--wall-s", type=float, help="with --from-sweep: the sweep's wall time")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-extrapolation", action="store_true")
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks" / "results" / f"{date.today()}-sweep-cost.json")
    args = parser.parse_args()
    if args.from_sweep:
        result = {"cpu": cpu_model(), "cores": os.cpu_count(), "date": str(date.today()),
                  **from_sweep(args.from_sweep, args.wall_s)}
        print(json.dumps({k: v for k, v in result.items() if k != "per_job"}, indent=1))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
        return
    import torch

    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
              "date": str(date.today())}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        result["fixed_costs"] = fixed_costs(tmp)
        print(json.dumps(result["fixed_costs"], indent=1), flush=True)
        sweep = sweep_args(args.jobs, args.train_size)
        runs = {"basic": [], "joblib": []}
        for i in range(args.repeats):
            for kind in (("basic", "joblib") if i % 2 == 0 else ("joblib", "basic")):
                runs[kind].append(run_sweep(kind, sweep, tmp, i))
                print(kind, runs[kind][-1], flush=True)
        result["sweep"] = {"overrides": sweep, "runs": runs,
                           "median_wall_s": {k: statistics.median(r["wall_s"] for r in v)
                                             for k, v in runs.items()}}
        if not args.no_extrapolation:
            result["extrapolation"] = extrapolate(tmp)
            print(json.dumps(result["extrapolation"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
