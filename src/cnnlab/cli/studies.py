"""`cnnlab study`, `search`, `runs` and `report`: many trials, one store."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cnnlab.cli.parsing import (
    Command,
    add_executor_flags,
    add_log_flags,
    add_overrides,
    config_changes,
    duration,
    executor_options,
    logger_from_flags,
    positive_int,
    seed_list,
)
from cnnlab.training.config import OVERRIDES


def _add_out(p: argparse.ArgumentParser, what: str) -> None:
    from cnnlab import api

    p.add_argument(
        "--out",
        type=Path,
        default=api.DEFAULT_OUT,
        help=f"{what} (default {api.DEFAULT_OUT})",
    )


def _resume_line(args: argparse.Namespace) -> str:
    return (
        f"finished trials and the last epoch are saved in {args.out}. "
        "Run the same command again to resume."
    )


def print_report(report: Any) -> None:
    """A study's summary for the terminal, then where its reports are."""
    from cnnlab.reporting.report import print_summary
    from cnnlab.util.terminal import output_console

    console = output_console()
    print_summary(report, console)
    console.print(f"\nReport: {report.markdown_path} and {report.html_path}")


def _study_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="NAME|FILE", help="built-in study or a study file")
    _add_out(p, "output folder")
    p.add_argument("--seeds", type=seed_list, help="override the seeds, e.g. 0,1,2")
    add_overrides(p)
    add_executor_flags(p, what="trials")
    p.add_argument(
        "--early-stop",
        choices=("asha",),
        help="with --executor ray: stop weak trials early with ASHA (ranks them by "
        "validation loss at 1, 2, 4... epochs); the report marks them",
    )
    add_log_flags(p)


def _study(args: argparse.Namespace) -> int:
    from cnnlab import api
    from cnnlab.training.progress import StudyProgress

    study = api.load_study(
        args.study, seeds=args.seeds, **config_changes(args, OVERRIDES)
    )
    options = executor_options(args) | {
        "early_stop": args.early_stop,
        "log": logger_from_flags(args),
    }
    started = time.perf_counter()
    with StudyProgress() as progress:
        report = api.run_study(study, args.out, progress=progress, **options)
    minutes = (time.perf_counter() - started) / 60
    print_report(report)
    print(f"Wall time: {minutes:.1f} min")
    return 0


STUDY = Command(
    "study",
    help="train architectures x seeds and compare them in a report",
    description="Run a study (built-in: quickstart, seed; or a study YAML file): "
    "every architecture x seed, recorded in an SQLite store, then a comparison "
    "table, diagnosis, figures and Markdown + HTML reports. Re-running skips "
    "finished trials and resumes an interrupted one.",
    arguments=_study_arguments,
    run=_study,
    after_interrupt=_resume_line,
)


def _search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="FILE", help="a study file with a search block")
    _add_out(p, "output folder")
    p.add_argument(
        "--trials",
        type=positive_int,
        help="candidates to train, pruned ones included, invalid points not (default: "
        "the block's trials, or the whole grid)",
    )
    p.add_argument(
        "--time-budget",
        type=duration,
        metavar="TIME",
        help="start no new candidate after this long, e.g. 600, 30m, 2h",
    )
    p.add_argument("--seeds", type=seed_list, help="the finalists' seeds, e.g. 0,1,2")
    add_overrides(p)
    add_executor_flags(p, what="candidates")


def _search(args: argparse.Namespace) -> int:
    from cnnlab import api
    from cnnlab.training.progress import StudyProgress

    search = api.load_search(
        args.study, seeds=args.seeds, **config_changes(args, OVERRIDES)
    )
    started = time.perf_counter()
    with StudyProgress() as progress:
        report = api.run_search(
            search,
            args.out,
            trials=args.trials,
            time_budget=args.time_budget,
            progress=progress,
            **executor_options(args),
        )
    for line in report.lines:
        print(line)
    if report.final is not None:
        print_report(report.final)
    if report.best_file is not None:
        print(f"Winner: {report.best_file} (cnnlab train {report.best_file})")
    print(f"Search report: {report.markdown_path} and {report.html_path}")
    print(f"Wall time: {(time.perf_counter() - started) / 60:.1f} min")
    return 0


SEARCH = Command(
    "search",
    help="search an architecture/training space with Optuna, then re-train the "
    "finalists over seeds",
    description="Search the space of a study file's `search:` block "
    "(docs/search.md): Optuna (TPE by default, random, grid; NSGA-II with two "
    "objectives) proposes points, each is shape-checked (an invalid point is "
    "recorded, not trained) and trained with one seed, ranked on validation "
    "only, weak ones pruned per epoch if the block asks. Then the top "
    "`finalists` are re-trained over the study's seeds (default 0-4) as the "
    "study <name>-final, the only trials that read the test set. Writes "
    "<out>/<name>/best.yaml (cnnlab train best.yaml trains the winner) and "
    "<out>/<name>/report/report.md and .html. Optuna's storage is "
    "<out>/optuna.sqlite: a killed search resumes where it stopped when run "
    "again, and `optuna-dashboard sqlite:///<out>/optuna.sqlite` shows it.",
    arguments=_search_arguments,
    run=_search,
    after_interrupt=lambda args: (
        f"finished candidates and the last epoch are saved in {args.out}. "
        "Run the same command again to resume."
    ),
)


def _runs_arguments(p: argparse.ArgumentParser) -> None:
    from cnnlab.training.status import Status

    _add_out(p, "the study folder")
    p.add_argument("--study", help="only this study")
    p.add_argument("--arch", help="only this architecture label")
    p.add_argument(
        "--status", choices=[s.value for s in Status], help="only trials in this state"
    )


def _runs(args: argparse.Namespace) -> int:
    from cnnlab import api
    from cnnlab.reporting.console import print_trials
    from cnnlab.util.terminal import output_console

    rows = api.list_trials(args.out, args.study, args.arch, args.status)
    print_trials(output_console(), api.store_path(args.out), rows)
    return 0


RUNS = Command(
    "runs",
    help="list the trials recorded in a study store",
    arguments=_runs_arguments,
    run=_runs,
)


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY", help="the study's name")
    _add_out(p, "the study folder")


def _report(args: argparse.Namespace) -> int:
    from cnnlab import api

    print_report(api.open_report(args.study, args.out))
    return 0


REPORT = Command(
    "report",
    help="rebuild a study's tables, figures and reports",
    arguments=_report_arguments,
    run=_report,
    after_interrupt=lambda args: (
        "each report file is written whole or not at all. "
        "Rebuild the report by running the same command again."
    ),
)

COMMANDS = (STUDY, SEARCH, RUNS, REPORT)
