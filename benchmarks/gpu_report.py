"""The helper of benchmarks/gpu_check.sh: probes the machine, writes the Markdown report and
packs the archive.

    python benchmarks/gpu_report.py probe WORK                  # WORK/env.json (imports torch)
    python benchmarks/gpu_report.py report WORK REPORT [--final]
    python benchmarks/gpu_report.py archive WORK ARCHIVE.tar.gz

`report` reads what gpu_check.sh left in WORK (meta.txt, stages.tsv, steps.tsv, env.json, the
run directories and the bench JSON), writes REPORT (Markdown) and WORK/results.json (every
figure), and exits 0 when every selected stage passed, 10 when one did not. Only the standard
library is used outside `probe`, so the report is written whatever state the environment is in.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
import tarfile
from pathlib import Path

STAGES = ("models", "compile", "sweep", "tta", "bench")
STEP_FIELDS = ("stage", "name", "status", "rc", "wall_s", "timeout_s", "dir", "log", "cmd")
STAGE_TITLES = {
    "setup": "setup (wheels, environment probe, nvidia-smi)",
    "models": "models: every model file, default recipe",
    "compile": "compile: one job eager vs compiled",
    "sweep": "sweep: kernel x dilation",
    "tta": "tta: convexp.bench time to 99%",
    "bench": "bench: convexp.bench throughput",
}
ARCHIVE_LIMIT = 15 * 2**20  # the device tool returns files of up to 16 MiB
FAILED = 10


# =============================================================================================
# probe: the machine, in a fresh process (imports torch)
# =============================================================================================


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe(work: Path) -> int:
    info: dict = {"python": platform.python_version(), "executable": sys.executable,
                  "host": socket.gethostname(), "cpu": cpu_model(), "cores": os.cpu_count(),
                  "platform": platform.platform()}
    try:
        import torch

        info.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                    cuda_available=torch.cuda.is_available())
        if info["cuda_available"]:
            props = torch.cuda.get_device_properties(0)
            info.update(cuda_device=torch.cuda.get_device_name(0),
                        cuda_device_count=torch.cuda.device_count(),
                        cuda_capability=f"{props.major}.{props.minor}",
                        cuda_memory_gib=round(props.total_memory / 2**30, 1),
                        cuda_multiprocessors=props.multi_processor_count)
    except Exception as exc:  # noqa: BLE001 - recorded, the report says what broke
        info["torch_error"] = repr(exc)
    for name in ("hydra", "omegaconf", "convexp"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", None) or "present"
            info[f"{name}_path"] = str(Path(module.__file__).parent)
        except Exception as exc:  # noqa: BLE001
            info[f"{name}_error"] = repr(exc)
    write_json(work / "env.json", info)
    print(json.dumps(info, indent=1))
    missing = [k for k in ("torch", "hydra", "omegaconf", "convexp") if f"{k}_error" in info]
    return 1 if missing else 0


# =============================================================================================
# reading what the script left behind
# =============================================================================================


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_meta(work: Path) -> dict:
    meta = {}
    try:
        for line in (work / "meta.txt").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                meta[key.strip()] = value.strip()
    except OSError:
        pass
    return meta


def read_tsv(path: Path, fields: tuple[str, ...]) -> list[dict]:
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        if line.strip():
            cells = line.split("\t")
            rows.append(dict(zip(fields, cells + [""] * (len(fields) - len(cells)), strict=False)))
    for row in rows:
        for key in ("wall_s", "timeout_s", "budget_s"):
            if key in row:
                row[key] = number(row[key])
        if "rc" in row:
            row["rc"] = int(row["rc"]) if row["rc"].lstrip("-").isdigit() else None
    return rows


def number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def last_line(text) -> str:
    lines = str(text).strip().splitlines()
    return lines[-1] if lines else ""


def log_tail(work: Path, step: dict, lines: int = 25) -> str:
    if not step.get("log"):
        return ""
    try:
        text = (work / step["log"]).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_figures(run_dir: Path) -> dict | None:
    """summary.json of one run, plus the first epoch's time (compile lands there)."""
    summary = read_json(run_dir / "summary.json")
    if not isinstance(summary, dict):
        return None
    try:
        first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
        summary["epoch1_s"] = first.get("epoch_time_s")
    except (OSError, ValueError, IndexError):
        summary["epoch1_s"] = None
    return summary


def completed(summary: dict | None) -> bool:
    if not summary or summary.get("status") != "completed":
        return False
    acc = summary.get("test_acc")
    return isinstance(acc, (int, float)) and 0 < acc <= 1


# =============================================================================================
# formatting
# =============================================================================================


def fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


def acc(value) -> str:
    return fmt(value, 4) if isinstance(value, (int, float)) else "-"


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |"
            for row in rows]
    return out


def step_status(step: dict | None, check_ok: bool = True) -> str:
    if step is None:
        return "not run"
    status = step["status"]
    if status == "ok":
        return "ok" if check_ok else "FAILED (check)"
    if status == "timeout":
        return f"TIMED OUT ({fmt(step['timeout_s'], 0)} s)"
    if status == "skipped":
        return "SKIPPED (no time left)"
    return f"FAILED (exit {step['rc']})"


# =============================================================================================
# one section per stage: (passed, notes, markdown lines, figures for results.json)
# =============================================================================================


class Stage:
    def __init__(self, name: str, steps: list[dict]):
        self.name, self.steps = name, steps
        self.problems: list[str] = []  # one line per failed step or check
        self.lines: list[str] = []
        self.figures: dict | list = {}

    def step(self, name: str) -> dict | None:
        return next((s for s in self.steps if s["name"] == name), None)

    def problem(self, step: dict | None, text: str) -> None:
        self.problems.append(f"{step['name'] if step else '?'}: {text}")

    @property
    def passed(self) -> bool:
        return bool(self.steps) and not self.problems and all(
            s["status"] == "ok" for s in self.steps)


def setup_section(stage: Stage, env: dict, meta: dict, nvsmi: list[str]) -> None:
    for step in stage.steps:
        if step["status"] != "ok":
            stage.problem(step, step_status(step))
    if "probe" not in {s["name"] for s in stage.steps}:
        stage.problem(None, "the environment probe did not run")
    for key in ("torch", "hydra", "omegaconf", "convexp"):
        if env and f"{key}_error" in env:
            stage.problem(stage.step("probe"), f"cannot import {key}: {env[key + '_error']}")
    if meta.get("device") == "cuda" and env and not env.get("cuda_available"):
        stage.problem(stage.step("probe"), "torch sees no CUDA device")
    stage.figures = {"env": env, "nvidia_smi": nvsmi}


def models_section(stage: Stage, work: Path) -> None:
    rows, figures = [], []
    for step in stage.steps:
        summary = run_figures(work / step["dir"]) if step["dir"] else None
        ok = completed(summary)
        if step["status"] != "ok":
            stage.problem(step, step_status(step))
        elif not ok:
            s = summary or {}
            reason = f", {s['reason']}" if s.get("reason") else ""
            stage.problem(step, f"summary.json: status {s.get('status', 'missing')}, "
                          f"test_acc {s.get('test_acc')}{reason}")
        s = summary or {}
        figures.append({"model": step["name"], "step_status": step["status"],
                        "job_wall_s": step["wall_s"], **{k: s.get(k) for k in SUMMARY_KEYS}})
        rows.append([f"`{step['name']}`", step_status(step, ok), acc(s.get("test_acc")),
                     acc(s.get("best_val_acc")), fmt(s.get("epochs_completed")),
                     fmt(s.get("epoch1_s")), fmt(s.get("train_time_s")), fmt(s.get("wall_s")),
                     fmt(step["wall_s"]), fmt(s.get("train_samples_per_s"), 0),
                     fmt(s.get("compiled")), fmt(s.get("params")), fmt(s.get("macs"))])
    stage.lines += table(["model file", "status", "test acc", "best val acc", "epochs",
                          "epoch 1 (s)", "train time (s)", "run wall (s)", "job wall (s)",
                          "train samples/s", "compiled", "params", "MACs/img"], rows)
    stage.lines += ["", "test acc: all test images of the run; train time: optimisation steps "
                    "only; run wall: `wall_s` of summary.json (in-process); job wall: the whole "
                    "`python -m convexp` process, start-up and compile included; train samples/s: "
                    "over all epochs but the first (compile and warm-up); epoch 1: the first "
                    "epoch's time, where a compile lands."]
    stage.figures = figures


SUMMARY_KEYS = ("status", "reason", "device", "compiled", "test_acc", "best_val_acc",
                "epochs_completed", "epoch1_s", "train_time_s", "wall_s", "train_samples_per_s",
                "params", "macs", "kernel_size", "dilation")


def compile_section(stage: Stage, work: Path, meta: dict) -> None:
    rows, figures = [], {}
    for name, override in (("eager", "trainer.compile=false"),
                           ("compiled", "trainer.compile=true")):
        step = stage.step(name)
        summary = run_figures(work / step["dir"]) if step and step["dir"] else None
        ok = completed(summary)
        if ok and name == "compiled" and summary.get("compiled") is not True:
            ok = False
            stage.problem(step, "trainer.compile=true but summary.json says compiled: false")
        elif step is None:
            stage.problem(None, f"{name}: not run")
        elif step["status"] != "ok" or not ok:
            stage.problem(step, step_status(step, ok))
        s = summary or {}
        figures[name] = {"job_wall_s": step["wall_s"] if step else None,
                         **{k: s.get(k) for k in SUMMARY_KEYS}}
        rows.append([name, f"`{override}`", step_status(step, ok), fmt(s.get("compiled")),
                     fmt(step["wall_s"] if step else None), fmt(s.get("wall_s")),
                     fmt(s.get("epoch1_s")), fmt(s.get("train_time_s")),
                     fmt(s.get("train_samples_per_s"), 0), acc(s.get("test_acc"))])
    stage.lines += [f"`model={meta.get('compile_model', '?')}`, "
                    f"{'default recipe' if not meta.get('sizes') else meta['sizes']}, "
                    "an empty compile cache.", ""]
    stage.lines += table(["mode", "override", "status", "compiled", "job wall (s)",
                          "run wall (s)", "epoch 1 (s)", "train time (s)", "train samples/s",
                          "test acc"], rows)
    eager, comp = figures.get("eager", {}), figures.get("compiled", {})
    if eager.get("job_wall_s") and comp.get("job_wall_s"):
        ratio = comp["job_wall_s"] / eager["job_wall_s"]
        figures["compiled_over_eager_job_wall"] = round(ratio, 3)
        line = (f"\nWhole job, compiled / eager: {ratio:.2f}x "
                f"({comp['job_wall_s']:.1f} s against {eager['job_wall_s']:.1f} s)")
        several_epochs = min(eager.get("epochs_completed") or 0,
                             comp.get("epochs_completed") or 0) > 1
        if several_epochs and eager.get("train_samples_per_s") and comp.get("train_samples_per_s"):
            speed = comp["train_samples_per_s"] / eager["train_samples_per_s"]
            figures["compiled_over_eager_samples_per_s"] = round(speed, 3)
            line += f"; training samples/s after the first epoch, compiled / eager: {speed:.2f}x"
        stage.lines.append(line + ".")
    stage.figures = figures


def sweep_section(stage: Stage, work: Path, meta: dict) -> None:
    step = stage.step("sweep")
    expected = int(meta.get("sweep_jobs") or 0)
    jobs = []
    sweep_dir = work / "sweep"
    if sweep_dir.is_dir():
        for job in sorted((d for d in sweep_dir.iterdir() if d.name.isdigit()),
                          key=lambda d: int(d.name)):
            jobs.append((int(job.name), run_figures(job)))
    done = sum(1 for _, s in jobs if completed(s))
    if step is None:
        stage.problem(None, "sweep: not run")
    elif step["status"] != "ok":
        stage.problem(step, step_status(step))
    if len(jobs) != expected or done != expected:
        stage.problem(step, f"{len(jobs)} job(s) ran, {done} completed; expected {expected}")
    wall = step["wall_s"] if step else None
    stage.figures = {"jobs": len(jobs), "expected_jobs": expected, "completed": done,
                     "wall_s": wall, "exit_code": step["rc"] if step else None,
                     "overrides": meta.get("sweep_overrides"),
                     "per_job": [{"job": n, **{k: (s or {}).get(k) for k in SUMMARY_KEYS}}
                                 for n, s in jobs]}
    command = f"python -m convexp -m model=depthwise_dilated {meta.get('sweep_overrides', '')}"
    stage.lines += [f"`{command}`{' ' + meta['sizes'] if meta.get('sizes') else ''}, one "
                    "process, an empty compile cache at the start.", ""]
    stage.lines += table(["sweep", "value"], [
        ["status", step_status(step, not stage.problems)],
        ["jobs", f"{len(jobs)} (expected {expected})"],
        ["completed", str(done)],
        ["wall time (s)", fmt(wall)],
        ["wall time per job (s)", fmt(wall / len(jobs) if wall and jobs else None)],
        ["exit code", fmt(step["rc"] if step else None)],
    ])
    if jobs:
        stage.lines.append("")
        stage.lines += table(
            ["job", "kernel", "dilation", "status", "compiled", "test acc", "epoch 1 (s)",
             "train time (s)", "run wall (s)", "train samples/s"],
            [[n, fmt((s or {}).get("kernel_size")), fmt((s or {}).get("dilation")),
              (s or {}).get("status", "no summary.json"), fmt((s or {}).get("compiled")),
              acc((s or {}).get("test_acc")), fmt((s or {}).get("epoch1_s")),
              fmt((s or {}).get("train_time_s")), fmt((s or {}).get("wall_s")),
              fmt((s or {}).get("train_samples_per_s"), 0)] for n, s in jobs])


def bench_json(stage: Stage, work: Path) -> tuple[dict | None, dict | None]:
    step = stage.steps[0] if stage.steps else None
    data = read_json(work / step["dir"]) if step and step["dir"] else None
    if step is None:
        stage.problem(None, "not run")
    elif step["status"] != "ok":
        stage.problem(step, step_status(step))
    elif not isinstance(data, dict):
        stage.problem(step, f"no JSON at {step['dir']}")
    return step, data if isinstance(data, dict) else None


def tta_section(stage: Stage, work: Path) -> None:
    step, data = bench_json(stage, work)
    results = (data or {}).get("time_to_accuracy") or []
    rows = []
    for r in results:
        if "error" in r:
            stage.problem(step, f"{r.get('recipe')}: {last_line(r['error'])}")
            rows.append([r.get("recipe"), "FAILED"] + ["-"] * 7)
            continue
        rows.append([r.get("recipe"), fmt(r.get("reached")), fmt(r.get("train_s")),
                     fmt(r.get("steps")), fmt(r.get("epochs"), 2), acc(r.get("test_acc")),
                     fmt(r.get("first_step_s")), fmt(r.get("compiled")),
                     fmt(r.get("peak_memory_mb"), 0)])
    target = results[0].get("target", 0.99) if results and "target" in results[0] else 0.99
    stage.lines += [f"Target {target:.2%} test accuracy; training seconds, test-set evaluation "
                    "off the clock; first step: the first training step, compile included.", ""]
    stage.lines += table(["recipe", "reached", "training (s)", "steps", "epochs", "test acc",
                          "first step (s)", "compiled", "peak MB"], rows or [["-"] * 9])
    stage.figures = {"machine": (data or {}).get("machine"), "time_to_accuracy": results}


def throughput_section(stage: Stage, work: Path, meta: dict) -> None:
    step, data = bench_json(stage, work)
    data = data or {}
    for r in data.get("runs", []):
        if "error" in r:
            stage.problem(step, f"{r.get('model')} {r.get('loop')}: {last_line(r['error'])}")
    settings = data.get("settings", {})
    line = f"`python -m convexp.bench {meta.get('bench_args', '')}`"
    if settings:
        line += (f": {settings.get('steps')} timed steps after {settings.get('warmup')} warm-up "
                 f"steps (compile included), {settings.get('repeats')} repeat(s), batch "
                 f"{settings.get('batch_size')}; each measurement in a fresh process")
    stage.lines += [line + ".", ""]
    rows = [[f"`{r['model']}`", r["loop"], fmt(r.get("samples_per_s_median"), 0),
             fmt(r.get("samples_per_s_min"), 0), fmt(r.get("samples_per_s_max"), 0),
             f"{r['vs_textbook']:.2f}x" if r.get("vs_textbook") else "-",
             fmt(r.get("warmup_s_median")), fmt(r.get("peak_memory_mb_max"), 0),
             f"{r.get('n', 0)} ok, {r.get('failed', 0)} failed"]
            for r in data.get("summary", [])]
    stage.lines += table(["model", "loop", "samples/s median", "min", "max", "vs textbook",
                          "warm-up (s)", "peak MB", "runs"], rows or [["-"] * 9])
    stage.figures = {"settings": settings, "summary": data.get("summary"),
                     "ratios": data.get("ratios")}


# =============================================================================================
# the report
# =============================================================================================


def environment_lines(env: dict, meta: dict, nvsmi: list[str]) -> list[str]:
    smi = [c.strip() for c in nvsmi[0].split(",")] if nvsmi else []
    card = smi[0] if smi else None
    dry = meta.get("mode") == "dry-run"
    rows = [
        ["date (UTC)", f"{meta.get('started', '?')} to {meta.get('finished', '(running)')}"],
        ["mode", "dry run on the CPU (tiny sizes)" if dry else "GPU (trainer.device=cuda)"],
        ["card (nvidia-smi)", card or "- (no nvidia-smi)"],
        ["card (torch.cuda.get_device_name)", env.get("cuda_device") or
         ("- (no CUDA device)" if env else "- (probe failed)")],
        ["driver, memory, compute capability (nvidia-smi)", ", ".join(smi[1:]) or "-"],
        ["torch", f"{env.get('torch', '-')} (CUDA {env.get('torch_cuda') or '-'})"],
        ["python", f"{env.get('python', '-')} ({env.get('executable', '-')})"],
        ["hydra-core, omegaconf", f"{env.get('hydra', '-')}, {env.get('omegaconf', '-')}"],
        ["CPU", f"{env.get('cpu', '-')}, {env.get('cores', '-')} cores"],
        ["host", env.get("host", "-")],
        ["convexp", f"commit {meta.get('commit', '?')}"
                    f"{' + uncommitted changes' if meta.get('dirty') == 'yes' else ''}"
                    f" ({env.get('convexp_path', '-')})"],
        ["time limit, stage budgets (s)", f"{meta.get('total_s', '?')}; {meta.get('budgets', '')}"],
        ["whole script (s)", meta.get("wall_s", "(running)")],
    ]
    return table(["", ""], rows)


def report(work: Path, out: Path, final: bool) -> int:
    meta = read_meta(work)
    env = read_json(work / "env.json") or {}
    steps = read_tsv(work / "steps.tsv", STEP_FIELDS)
    stage_rows = {r["stage"]: r
                  for r in read_tsv(work / "stages.tsv", ("stage", "budget_s", "wall_s"))}
    try:
        nvsmi = [ln for ln in (work / "nvidia-smi.csv").read_text().splitlines() if ln.strip()]
    except OSError:
        nvsmi = []
    selected = [s for s in meta.get("stages", ",".join(STAGES)).split(",") if s]
    card = (nvsmi[0].split(",")[0].strip() if nvsmi else None) or env.get("cuda_device")
    title = card or (f"{env.get('cpu')} (CPU)" if env.get("cpu") else "unknown machine")

    stages: list[Stage] = []
    for name in ["setup", *selected]:
        stage = Stage(name, [s for s in steps if s["stage"] == name])
        if name == "setup":
            setup_section(stage, env, meta, nvsmi)
        elif not stage.steps:
            pass  # not reached yet, or cut short before its first step was recorded
        elif name == "models":
            models_section(stage, work)
        elif name == "compile":
            compile_section(stage, work, meta)
        elif name == "sweep":
            sweep_section(stage, work, meta)
        elif name == "tta":
            tta_section(stage, work)
        elif name == "bench":
            throughput_section(stage, work, meta)
        stages.append(stage)

    def verdict(stage: Stage) -> str:
        if stage.name not in stage_rows and not (final and stage.steps):
            return "not run" if final else "not run yet"
        if stage.passed:
            return "passed"
        if stage.steps and all(s["status"] == "skipped" for s in stage.steps):
            return "SKIPPED (no time left)"
        if any(s["status"] == "timeout" for s in stage.steps):
            return "TIMED OUT"
        return "FAILED"

    verdicts = {s.name: verdict(s) for s in stages}
    all_passed = all(v == "passed" for v in verdicts.values())
    failed = [name for name, v in verdicts.items() if v != "passed"]
    if not final:
        headline = "in progress"
    elif all_passed:
        headline = "every stage passed"
    else:
        headline = "stage(s) not passed: " + ", ".join(f"{n} ({verdicts[n]})" for n in failed)

    lines = [f"# convexp GPU check: {title}", "",
             f"**{'Dry run on the CPU: ' if meta.get('mode') == 'dry-run' else ''}{headline}.** "
             "Written by `benchmarks/gpu_check.sh`; every figure is also in `results.json` in "
             "`gpu_check.tar.gz`.", "", "## Machine", ""]
    lines += environment_lines(env, meta, nvsmi)
    lines += ["", "## Stages", ""]
    lines += table(["stage", "result", "wall (s)", "budget (s)", "problems"], [
        [STAGE_TITLES.get(s.name, s.name), verdicts[s.name],
         fmt(stage_rows.get(s.name, {}).get("wall_s")),
         fmt(stage_rows.get(s.name, {}).get("budget_s"), 0),
         "; ".join(s.problems) or "-"] for s in stages])
    titles = {"models": "Models (default recipe)", "compile": "Eager vs compiled",
              "sweep": "Sweep", "tta": "Time to accuracy (convexp.bench)",
              "bench": "Throughput (convexp.bench)"}
    for stage in stages[1:]:
        lines += ["", f"## {titles[stage.name]}", ""]
        lines += stage.lines or [f"_{verdicts[stage.name]}._"]

    bad_steps = [s for s in steps if s["status"] != "ok"]
    bad_steps += [s for st in stages for s in st.steps if s["status"] == "ok"
                  and any(p.startswith(s["name"] + ":") for p in st.problems)]
    if bad_steps:
        lines += ["", "## Failures", ""]
        for s in bad_steps:
            lines += [f"### {s['stage']} / {s['name']}: {step_status(s, False)}", "",
                      f"`{s['cmd']}`", ""]
            tail = log_tail(work, s)
            if tail:
                lines += [f"Last lines of `{s['log']}`:", "", "```text", tail, "```", ""]
    lines += ["", "## Commands", "", "Every step, as run (`$WORK` is the scratch dir; each step "
              "had `TORCHINDUCTOR_CACHE_DIR` and `TRITON_CACHE_DIR` set to an empty dir of its "
              "own, `WANDB_MODE=disabled`):", "", "```text"]
    lines += [f"[{s['stage']}/{s['name']}] {s['cmd']}" for s in steps] + ["```"]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out)
    write_json(work / "results.json", {
        "meta": meta, "passed": all_passed if final else None, "final": final,
        "stages": {s.name: {"result": verdicts[s.name], "problems": s.problems,
                            "wall_s": stage_rows.get(s.name, {}).get("wall_s"),
                            "budget_s": stage_rows.get(s.name, {}).get("budget_s"),
                            "steps": s.steps, "figures": s.figures} for s in stages}})
    return 0 if all_passed else FAILED


# =============================================================================================
# the archive
# =============================================================================================


def archive(work: Path, out: Path) -> int:
    """WORK as gpu_check/..., without compile caches and checkpoints; if that is over the
    device tool's file limit, only the JSON, logs and reports."""

    def keep(small: bool):
        def filt(info: tarfile.TarInfo):
            parts = Path(info.name).parts
            if len(parts) > 1 and parts[1] == "cache":
                return None
            if info.name.endswith((".pt", ".ckpt", ".tmp")) or "wandb" in parts:
                return None
            if small and info.isfile() and not info.name.endswith(
                    (".json", ".jsonl", ".md", ".tsv", ".txt", ".csv", ".yaml")):
                return None
            return info
        return filt

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    for small in (False, True):
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(work, arcname="gpu_check", filter=keep(small))
        if tmp.stat().st_size <= ARCHIVE_LIMIT:
            break
    os.replace(tmp, out)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB")
    return 0


def main(argv: list[str]) -> int:
    usage = __doc__.split("\n\n")[1]
    if len(argv) < 2 or argv[0] not in ("probe", "report", "archive"):
        print(usage, file=sys.stderr)
        return 2
    work = Path(argv[1])
    if argv[0] == "probe":
        return probe(work)
    if len(argv) < 3:
        print(usage, file=sys.stderr)
        return 2
    if argv[0] == "report":
        return report(work, Path(argv[2]), final="--final" in argv[3:])
    return archive(work, Path(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
