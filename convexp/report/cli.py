"""``python -m convexp.compare`` (``convexp-compare``): write a sweep's report, print it, and
with ``--wandb`` log it into the W&B group its jobs logged into."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from convexp import record
from convexp.atomic import atomic_write_text
from convexp.report.render import render_markdown, render_text, write_csv
from convexp.report.runs import aggregate, erf_rows, repeated_runs


def write_report(multirun_dir: Path, out_dir: Path | None = None, *, plots: bool = True,
                 summaries: list[dict] | None = None, configs: list[dict] | None = None,
                 sources: Sequence[Path] | None = None) -> tuple[Path, str]:
    """Write ``report/`` (CSV, Markdown, PNG plots) for a multirun dir; returns the report dir
    and the text table with the list of files written. ``summaries`` (as
    :func:`convexp.record.load_summaries` reads them, ``job_dir`` relative to
    ``multirun_dir``) and ``configs`` (their :func:`convexp.report.runs.aggregate`) are
    computed here when not given: the statistics of a report are computed once, and every part
    of it reads them. ``sources``: the dirs the report names (default: ``multirun_dir``)."""
    multirun_dir = Path(multirun_dir)
    summaries = record.load_summaries(multirun_dir) if summaries is None else summaries
    configs = aggregate(summaries) if configs is None else configs
    erfs = erf_rows(configs, multirun_dir)
    sources = list(sources) if sources else [multirun_dir]
    text = render_text(sources, summaries, configs, erfs)
    out_dir = Path(out_dir) if out_dir is not None else multirun_dir / record.REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(configs, out_dir / "comparison.csv")
    pngs = []
    if plots:
        from convexp.report.plots import write_plots

        pngs = write_plots(configs, out_dir, erfs=erfs)
    atomic_write_text(out_dir / "comparison.md",
                      render_markdown(sources, summaries, configs, pngs, erfs))
    written = ["comparison.csv", "comparison.md", *(p.name for p in pngs)]
    return out_dir, f"{text}\nReport written to {out_dir}: {', '.join(written)}"


def _error(message: str) -> int:
    print(f"convexp: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="convexp-compare",
        description="Compare the jobs of a Hydra multirun (seeds pooled per configuration), "
        "ranked by the sweep's objective (validation accuracy by default).",
    )
    parser.add_argument(
        "multirun_dirs", type=Path, nargs="+", metavar="multirun_dir",
        help="multirun directory with job dirs; several (e.g. your own model's sweep and "
        "convexp's) make one report, with --out",
    )
    parser.add_argument("--out", type=Path,
                        help="report dir (default: <multirun_dir>/report; required with "
                        "several dirs)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the table and plots to one W&B run (job_type=report)",
    )
    parser.add_argument("--project", default="convexp", help="W&B project (default: convexp)")
    parser.add_argument("--entity", default=None, help="W&B entity (default: yours)")
    parser.add_argument(
        "--group",
        default=None,
        help="W&B group (default: the group the sweep's jobs logged into)",
    )
    parser.add_argument(
        "--wandb-mode",
        default="auto",
        choices=("auto", "online", "offline", "disabled"),
        help="auto: WANDB_MODE, else online with credentials, offline without",
    )
    args = parser.parse_args(argv)

    dirs = args.multirun_dirs
    for folder in dirs:
        if not folder.is_dir():
            return _error(f"{folder} does not exist or is not a directory")
    if len(dirs) > 1 and args.out is None:
        return _error(f"{len(dirs)} sweep dirs make one report: say where it goes with --out")
    if len(dirs) == 1:
        root, summaries = dirs[0], record.load_summaries(dirs[0])
    else:
        root, summaries = record.load_sweeps(dirs)
    if not summaries:
        return _error(f"no {record.SUMMARY} files under {', '.join(map(str, dirs))}")
    repeats = repeated_runs(summaries)
    if repeats:
        first, repeat = (root / job for job in repeats[0])
        return _error(
            f"{repeat} repeats {first} (same configuration and seed, both completed): pooled, "
            f"one run would count as two seeds. Leave one of them out ({len(repeats)} such "
            f"{'pair' if len(repeats) == 1 else 'pairs'})"
        )
    groups = sorted({s[record.WANDB_GROUP] for s in summaries if s.get(record.WANDB_GROUP)})
    if args.wandb and args.group is None and len(dirs) > 1 and len(groups) > 1:
        return _error(f"the jobs logged into {len(groups)} W&B groups ({', '.join(groups)}): "
                      "name the report's group with --group")
    configs = aggregate(summaries)
    try:
        out_dir, text = write_report(root, args.out, plots=not args.no_plots,
                                     summaries=summaries, configs=configs, sources=dirs)
    except OSError as err:
        return _error(f"could not write the report: {err.strerror or err}"
                      f"{f' ({err.filename})' if err.filename else ''}")
    print(text)
    if args.wandb:
        from convexp.report.wandb_upload import (
            log_report_to_wandb,
            obey_the_jobs_decision,
            report_group,
        )

        obey_the_jobs_decision(summaries)
        group = report_group(summaries, Path(root).resolve(), args.group)
        try:
            run_id = log_report_to_wandb(
                configs, out_dir, project=args.project, entity=args.entity, group=group,
                mode=args.wandb_mode,
            )
        except Exception as err:  # noqa: BLE001 - the local report is written; say why W&B failed
            print(
                f"convexp: W&B logging failed ({type(err).__name__}: {err}); "
                f"the local report in {out_dir} is complete",
                file=sys.stderr,
            )
            return 1
        print(f"Report logged to W&B: project {args.project}, group {group}, run {run_id}")
    return 0
