"""TPE vs random search at the same budget, then the winner against conv5-medium.

    python3 benchmarks/search.py                 # the full run (about 30 min, 2 cores)
    python3 benchmarks/search.py --short         # a few tiny trials: shows it works

Part 1: the same space (a conv template: blocks, width, kernel, batch norm, dense
units, dropout, learning rate) searched twice with the same number of trials, once
by TPE and once by random sampling, both with the median pruner, one seed per
candidate, ranked on validation accuracy. Printed: the best validation accuracy each
reached, and how many trials each pruned or found invalid.

Part 2: TPE's finalists re-trained over 5 seeds beside conv5-medium (the notebook's
best net, the same epochs and data): 5-seed mean test accuracy, params and training
FLOPs per sample, and how many pairwise orders of the search's single-seed ranking
the seeds overturned. The search report, the finalists' study report and best.yaml
are left under --out.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import yaml

TEMPLATE = {
    "layers": [
        {"repeat": "$blocks", "layers": [
            {"Conv2D": {"filters": "$width", "kernel_size": "$kernel",
                        "padding": "same"}},
            {"when": "$bn", "layers": ["BatchNormalization"]},
            {"Activation": {"activation": "relu"}},
            {"MaxPooling2D": {"pool_size": 2}},
        ]},
        "Flatten",
        {"Dropout": {"rate": "$dropout"}},
        {"Dense": {"units": "$units", "activation": "relu"}},
        {"Dense": {"units": 10, "activation": "softmax"}},
    ]
}  # fmt: skip
SPACE = {
    "lr": {"float": [3.0e-4, 1.0e-2], "log": True},
    "blocks": {"int": [1, 3]},
    "width": {"int": [4, 48], "log": True},
    "kernel": {"choice": [3, 5, 7]},
    "bn": {"choice": [True, False]},
    "units": {"int": [16, 256], "log": True},
    "dropout": {"float": [0.0, 0.5]},
}
FULL = {"trials": 24, "epochs": 3, "train_limit": 20_000, "val_size": 5_000,
        "finalists": 3, "seeds": [0, 1, 2, 3, 4]}  # fmt: skip
SHORT = {"trials": 3, "epochs": 1, "train_limit": 1_000, "val_size": 300,
         "finalists": 2, "seeds": [0, 1]}  # fmt: skip


def study_doc(name: str, sampler: str, s: dict, baseline: bool) -> dict:
    train = {"epochs": s["epochs"], "train_limit": s["train_limit"],
             "val_size": s["val_size"]}  # fmt: skip
    doc = {"name": name, "train": train, "seeds": s["seeds"],
           "search": {"trials": s["trials"], "sampler": sampler, "seed": 0,
                      "pruner": "median", "objectives": ["val_acc"],
                      "finalists": s["finalists"], "space": SPACE,
                      "architecture": TEMPLATE}}  # fmt: skip
    if baseline:
        doc["architectures"] = ["conv5-medium"]
    return doc


def search_figures(out: Path, name: str) -> dict:
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out}/optuna.sqlite")
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    return {
        "best val acc %": 100 * max((t.values[0] for t in done), default=float("nan")),
        "completed": len(done),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "invalid": sum(bool(t.user_attrs.get("invalid")) for t in trials),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="a quick demonstration")
    parser.add_argument("--out", type=Path, default=Path("bench-search"))
    parser.add_argument("--trials", type=int, help="override the trials per sampler")
    args = parser.parse_args()
    settings = dict(SHORT if args.short else FULL)
    if args.trials:
        settings["trials"] = args.trials
    from cnnlab.search.engine import run_search
    from cnnlab.search.space import parse_search
    from cnnlab.studies.study import parse_study

    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for sampler in ("random", "tpe"):
        name = f"bench-{sampler}"
        doc = study_doc(name, sampler, settings, baseline=sampler == "tpe")
        (args.out / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        spec = parse_search(parse_study(doc, source=f"{name}.yaml"))
        started = time.perf_counter()
        result = run_search(spec, args.out, final=sampler == "tpe")
        rows[sampler] = search_figures(args.out, name) | {
            "minutes": (time.perf_counter() - started) / 60
        }
    print(f"\nSearch phase, {settings['trials']} trials each, {settings['epochs']} "
          f"epochs on {settings['train_limit']} images:")  # fmt: skip
    for sampler, row in rows.items():
        cells = ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in row.items()
        )
        print(f"  {sampler:6}: {cells}")
    from cnnlab.search.report import build_search_report

    report = build_search_report(result)
    for line in report.lines:
        print(line)
    assert report.final is not None
    for r in report.final.rows:
        accs = [t.test_acc for t in report.final.trials if t.label == r.label]
        mean = statistics.fmean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"  {r.label:14} test acc {100 * mean:.2f} ± {100 * std:.2f} % "
              f"(n = {len(accs)}), params {r.params:,}, training FLOPs/sample "
              f"{3 * r.flops:,}")  # fmt: skip
    print(f"Search report: {report.markdown_path}")
    if report.best_file is not None:
        print(f"Winner: {report.best_file}\n{report.best_file.read_text()}")


if __name__ == "__main__":
    main()
