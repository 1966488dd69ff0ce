"""`cnnlab import`, `export` and `export-study`: the doors to other tools."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnlab.cli.parsing import LOG_URI_HELP, Command, fixed


def _import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, metavar="SOURCE", help="the file to import")
    p.add_argument(
        "--out",
        type=Path,
        help="run folder (default runs/<name>-imported-<time>), the spec file of "
        "an architecture without weights (default ./<name>.yaml), or for code the "
        "folder of its architecture files and study (default imported/<file>/)",
    )


def _import(args: argparse.Namespace) -> int:
    """Keras models and Keras code, routed by suffix in api.import_model."""
    from cnnlab import api

    for line in api.import_model(args.source, args.out).lines():
        print(line)
    return 0


IMPORT = Command(
    "import",
    help="import a Keras Sequential model (.keras, .h5, .json) or Keras code "
    "(.py, .ipynb)",
    description="Read Keras models without running any code: a .keras archive "
    "or legacy .h5 becomes a run folder (spec, run.json, weights) that evaluate "
    "and predict use; a .json config becomes a spec file; a .py file or Jupyter "
    "notebook gives one architecture file per Sequential model built in it and "
    "a study.yaml listing them (what cannot be translated is reported as "
    "file:line, or file:cell N:line M, and the other models still import).",
    arguments=_import_arguments,
    run=_import,
    after_interrupt=fixed("nothing half-written is kept. Run the same command again."),
)


def _export_arguments(p: argparse.ArgumentParser) -> None:
    from cnnlab.interop.export import FORMATS

    p.add_argument("run", type=Path, metavar="RUN", help="a run folder")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="onnx",
        help="onnx (needs the interop extra), keras (the keras extra) or "
        "torchscript (default onnx)",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="the file to write (default RUN/model.onnx, .keras or .pt)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out file, if a previous export wrote it",
    )


def _dims(shape: tuple[int | str, ...]) -> str:
    return f"({', '.join(map(str, shape))})"


def _export(args: argparse.Namespace) -> int:
    from cnnlab import api

    path = api.export_run(args.run, args.format, args.out, args.overwrite)
    sig = api.export_signature(args.run, args.format)
    inputs = f"{sig.input_name or 'tensor'} {_dims(sig.input_shape)}"
    outputs = f"{sig.output_name or 'tensor'} {_dims(sig.output_shape)}"
    print(f"Wrote: {path}")
    print(f"Input: {inputs} float32 in [0, 1], channels last as in Keras")
    print(f"Output: {outputs} float32, class probabilities (softmax applied)")
    if sig.opset is not None:
        print(f"ONNX opset: {sig.opset}")
    print(f"Load with: {sig.loader}({str(path)!r})")
    return 0


EXPORT = Command(
    "export",
    help="write a run's network as an ONNX, Keras or TorchScript file",
    description="Export a trained run for use without cnnlab. Every format takes "
    "(N, H, W, C) float32 images in [0, 1], (N, 28, 28, 1) for MNIST, channels "
    "last as in Keras (the graph transposes to NCHW inside), and gives class "
    "probabilities (N, classes), softmax applied; the batch size N is free.",
    arguments=_export_arguments,
    run=_export,
    after_interrupt=fixed(
        "the export is written whole or not at all. Run the same command again."
    ),
)


def _export_study_arguments(p: argparse.ArgumentParser) -> None:
    from cnnlab import api
    from cnnlab.interop.loggers import LOG_KINDS

    p.add_argument("study", metavar="STUDY", help="the study's name")
    p.add_argument("--to", choices=LOG_KINDS, required=True, help="the backend")
    p.add_argument("--log-uri", metavar="URI", help=LOG_URI_HELP)
    p.add_argument(
        "--out",
        type=Path,
        default=api.DEFAULT_OUT,
        help=f"the study folder (default {api.DEFAULT_OUT})",
    )


def _export_study(args: argparse.Namespace) -> int:
    from cnnlab import api
    from cnnlab.interop.loggers import log_location

    count = api.export_study(args.study, args.to, args.log_uri, args.out)
    where = log_location(args.to, args.log_uri)
    print(f"{count} finished trial(s) of study '{args.study}' logged to {where}")
    if args.to == "tensorboard":
        print(f"View with: tensorboard --logdir {where}")
    elif "://" not in where or where.startswith(("sqlite:", "file:")):
        print(f"View with: mlflow ui --backend-store-uri {where}")
    return 0


EXPORT_STUDY = Command(
    "export-study",
    help="copy a finished study's trials to MLflow or TensorBoard",
    description="Log a study's finished trials from its store and run folders, "
    "without training: what --log does during a study, later. Trials logged "
    "before are not logged twice.",
    arguments=_export_study_arguments,
    run=_export_study,
    after_interrupt=fixed(
        "trials already sent stay sent. Run the same command again to send the rest."
    ),
)

COMMANDS = (IMPORT, EXPORT, EXPORT_STUDY)
