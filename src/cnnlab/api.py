"""The Python API: what the CLI does, callable from a script or a Jupyter notebook.

import cnnlab
arch = cnnlab.load("conv5-medium")          # a preset, number or YAML file
print(cnnlab.summary(arch))
result = cnnlab.train(arch, cnnlab.TrainConfig(epochs=2))
result.test_acc, result.history.as_dict()
cnnlab.plot_history(result.path)             # the run's curves.png
cnnlab.predict(result.path, ["digit.png"])

study = cnnlab.load_study("quickstart", seeds=[0, 1], epochs=2)
report = cnnlab.run_study(study, "studies")   # trains, then builds the report
report                                        # in Jupyter: the table and figures
cnnlab.open_report("quickstart", "studies")   # the report again, from the store

search = cnnlab.load_search("my-search.yaml")  # a study file with a search: block
found = cnnlab.run_search(search, "studies")  # needs the `search` extra (Optuna)
found.best_file, found.markdown_path          # best.yaml and the search report
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from cnnlab.data.datasets import load_dataset, split_dataset
from cnnlab.data.images import load_image
from cnnlab.errors import CnnlabError, RunError
from cnnlab.nn.model import Network, build_model
from cnnlab.nn.presets import (
    load_preset,
    preset_names,
    recipe_names,
    resolve_architecture,
)
from cnnlab.nn.shapes import check_input, check_memory, infer
from cnnlab.nn.spec import Architecture
from cnnlab.nn.summary import format_summary
from cnnlab.reporting.report import StudyReport, build_report
from cnnlab.search.engine import run_search as _run_search
from cnnlab.search.report import SearchReport, build_search_report
from cnnlab.search.space import SearchSpec, parse_search
from cnnlab.search.tuner import import_optuna
from cnnlab.studies.layout import DEFAULT_OUT, StudyLayout
from cnnlab.studies.runner import make_executor
from cnnlab.studies.runner import run_study as _run_study
from cnnlab.studies.store import Store
from cnnlab.studies.study import Study, override
from cnnlab.studies.study import load_study as _load_study_file
from cnnlab.training.config import TrainConfig, overridden, recipe_config
from cnnlab.training.curves import plot_history as _plot_history
from cnnlab.training.loop import (
    EVAL_BATCH,
    History,
    Reporter,
    class_probabilities,
    evaluate,
)
from cnnlab.training.progress import (
    StudyProgress,
    default_reporter,
    default_study_progress,
)
from cnnlab.training.runs import CURVES_FILE, RunRecord, default_run_path, open_run
from cnnlab.training.session import (
    Hooks,
    RunResult,
    image_shape,
    resume_run,
    train_run,
    use_conv_path,
)
from cnnlab.training.status import Status
from cnnlab.util.machine import available_memory

if TYPE_CHECKING:
    from cnnlab.interop.export import Signature
    from cnnlab.interop.loggers import RunLogger


@dataclass(frozen=True)
class Prediction:
    """The predicted class of one image file."""

    path: str
    label: int
    name: str
    probability: float
    probabilities: tuple[float, ...]
    converted: str = ""  # what was converted to fit the net (an image-set run)


def load(name_or_path: str | int | Path) -> Architecture:
    """An architecture: preset name ('conv3-small'), number (2 or '2') or YAML/JSON
    file."""
    if isinstance(name_or_path, int) and not isinstance(name_or_path, bool):
        name_or_path = str(name_or_path)
    if not isinstance(name_or_path, str | Path):
        raise TypeError(
            "load() takes a preset name ('conv3-small'), a preset number (2) or the "
            f"path of an architecture file. Received: {type(name_or_path).__name__}."
        )
    return resolve_architecture(name_or_path)


# The Python API checks its arguments as the CLI's flags are checked: the same
# messages, a TypeError for a value of the wrong kind.


def _with_layers(arch: Architecture) -> Architecture:
    if not arch.layers:
        raise CnnlabError(
            f"architecture '{arch.name}': has no layers. Give at least one, e.g. "
            "Architecture('net', (Flatten(), Dense(10, activation='softmax')))."
        )
    return arch


def _image_list(images: object) -> list[str | Path]:
    """One path or a sequence of paths, never a string read character by character."""
    if isinstance(images, str | Path):
        return [images]
    if not isinstance(images, Sequence) or not all(
        isinstance(i, str | Path) for i in images
    ):
        raise TypeError(
            "predict() takes an image path or a list of image paths. Received: "
            f"{type(images).__name__}."
        )
    if not images:
        raise CnnlabError("predict(): no images given. Give one or more image paths.")
    return list(images)


def _seed_list(seeds: object) -> list[int] | None:
    """Seeds as a list of integers >= 0 (the CLI's --seeds 0,1,2 as [0, 1, 2])."""
    if seeds is None:
        return None
    if isinstance(seeds, str) or not isinstance(seeds, Sequence):
        raise TypeError(
            f"seeds must be a list of integers such as [0, 1, 2]. Received: {seeds!r}."
        )
    if not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds
    ):
        raise CnnlabError(f"seeds: expected integers >= 0, got {list(seeds)!r}.")
    return list(seeds)


def _status(status: Status | str | None) -> str | None:
    if status is None:
        return None
    known = [s.value for s in Status]
    if str(status) not in known:
        raise CnnlabError(
            f"status must be one of {', '.join(known)}. Received: status={status!r}."
        )
    return str(status)


def summary(arch: Architecture | str, num_classes: int | None = None) -> str:
    """The Keras-style summary text of an architecture."""
    if not isinstance(arch, Architecture):
        arch = load(arch)
    return format_summary(infer(_with_layers(arch), num_classes))


def train_config(arch: str | Path, **changes: Any) -> TrainConfig:
    """The settings `cnnlab train ARCH --flag ...` trains with: a recipe's own
    (`fast`), else the notebook's protocol, then `changes` (None: unchanged) on
    top. `val_size` without a hold-out is an error, as the flag is."""
    return overridden(recipe_config(arch), changes)


def recipe_changes(arch: str | Path, config: TrainConfig) -> dict[str, Any]:
    """The settings a recipe sets apart from TrainConfig(), with the values
    `config` (the recipe's, after flags) trains with; {} for other nets."""
    default = TrainConfig().to_dict()
    recipe = recipe_config(arch).to_dict()
    return {k: getattr(config, k) for k, v in recipe.items() if v != default[k]}


@dataclass(frozen=True)
class PresetFacts:
    """A built-in network: the notebook's numbering (None for recipes), what it
    is, its size and cost, and a recipe's own training settings."""

    number: int | None
    name: str
    description: str
    params: int
    flops: int
    training: dict[str, Any]


def presets() -> list[PresetFacts]:
    """The built-in networks (the notebook's nine, then the recipes)."""
    recipes = recipe_names()
    plain = [name for name in preset_names() if name not in recipes]
    facts = []
    for number, name in [*enumerate(plain, start=1), *((None, r) for r in recipes)]:
        info = infer(load_preset(name))
        facts.append(
            PresetFacts(
                number,
                name,
                info.arch.description,
                info.total,
                info.flops,
                recipe_changes(name, recipe_config(name)),
            )
        )
    return facts


@contextmanager
def _torch_state_kept() -> Iterator[None]:
    """Leave torch's thread count and random generators as the caller had them:
    training sets both (threads from the config, seeds for weights and dropout)."""
    threads = torch.get_num_threads()
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _entered(display: object) -> AbstractContextManager:
    """A display cnnlab made for the caller, as a context (rich's live bars must
    be stopped); anything else, or None, as a no-op context."""
    if isinstance(display, AbstractContextManager):
        return display
    return nullcontext()


def train(
    arch: Architecture | str,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    hooks: Hooks | None = None,
    log: RunLogger | None = None,
) -> RunResult:
    """Train an architecture into a new run folder and score it on the test set;
    with `log`, copy the finished run to MLflow or TensorBoard (never fails it).

    Without `config`, a recipe's name or file (`"fast"`) trains with the recipe's
    settings, anything else with TrainConfig(): what `cnnlab train NAME` does.
    """
    if config is None and not isinstance(arch, Architecture):
        config = train_config(arch)
    arch = _with_layers(arch if isinstance(arch, Architecture) else load(arch))
    path = Path(out) if out is not None else default_run_path(arch.name)
    made = reporter is None and hooks is None
    if made:  # progress fit for a notebook or a terminal
        reporter = default_reporter(f"Run folder: {path}")
    with _torch_state_kept(), _entered(reporter if made else None):
        result = train_run(
            arch, config or TrainConfig(), path, overwrite, hooks or Hooks(reporter)
        )
    return _logged(result, log)


def _logged(result: RunResult, log: RunLogger | None) -> RunResult:
    """The finished run copied to `log` if given; a failure is a warning line."""
    if log is not None:
        from cnnlab.interop.study_logging import log_single_run

        log_single_run(log, result.path)
    return result


def resume(
    run: str | Path,
    epochs: int | None = None,
    reporter: Reporter | None = None,
    hooks: Hooks | None = None,
    device: str | None = None,
    threads: int | None = None,
    log: RunLogger | None = None,
) -> RunResult:
    """Continue an interrupted run from its last checkpoint (or extend its epochs),
    optionally on another device or with another thread count; `log` as in train."""
    changes = {"epochs": epochs, "device": device, "threads": threads}
    made = reporter is None and hooks is None
    if made:  # progress fit for a notebook or a terminal
        reporter = default_reporter(f"Run folder: {run}")
    with _torch_state_kept(), _entered(reporter if made else None):
        result = resume_run(run, changes, hooks or Hooks(reporter))
    return _logged(result, log)


def load_model(run: str | Path) -> tuple[RunRecord, Network]:
    """A run's network with its saved weights, ready for inference."""
    record = open_run(run)
    arch = record.architecture()
    env = record.meta.get("environment")
    names = env.get("class_names") if isinstance(env, dict) else None
    classes = len(names) if isinstance(names, list) and names else None
    cpu = torch.device("cpu")
    check_memory(infer(arch, classes), EVAL_BATCH, None, available_memory(cpu))
    model = build_model(arch, classes)
    if record.conv_path is not None:  # score as it trained; never a new measurement
        use_conv_path(model, cpu, EVAL_BATCH, record.conv_path)
    record.load_weights(model)
    return record, model.eval()


def get_data(name: str, progress: Any = None) -> Path:
    """Download data set `name` (cifar10, cifar100, fashion-mnist, kmnist) into the
    cache folder where `data=name` finds it, checking its pinned checksums;
    `progress(file, bytes_done, bytes_total)` is called as it goes."""
    from cnnlab.data.fetch import get

    return get(name, progress)


def describe_data(
    data: str | Path,
    grid: str | Path | None = None,
    config: TrainConfig | None = None,
) -> Any:
    """What a data set holds (classes, images per class per split, size, mode,
    pixel statistics) as a `DataSummary`; with `grid`, also a PNG of sample images
    per class there. Image folders are read by `config`'s image settings."""
    from cnnlab.data.show import sample_grid, summarize
    from cnnlab.training.session import image_options

    config = config or TrainConfig()
    dataset = load_dataset(str(data), image_options(config))
    summary = summarize(dataset)
    if grid is not None:
        summary.grid = sample_grid(dataset, Path(grid))
    return summary


def evaluate_run(run: str | Path, data: str | None = None) -> dict[str, Any]:
    """Re-score a run's saved weights on the test set of its data set (or `data`)."""
    record, model = load_model(run)
    from cnnlab.training.session import image_options

    config = record.config.replace(data=data)
    dataset = load_dataset(config.data, image_options(config))
    check_input(model.arch, image_shape(dataset), config.data)
    outputs = model.info.output_shape[0]
    if dataset.num_classes > outputs:
        raise RunError(
            f"{config.data}: the data set has {dataset.num_classes} classes, but the "
            f"network of {record.path} scores {outputs}. Evaluate it on data with "
            "the classes it was trained on."
        )
    split = split_dataset(dataset, validation="none", test_limit=config.test_limit)
    loss, acc = evaluate(
        model, split.x_test, split.y_test, test_augment=record.config.test_augment
    )
    return {
        "run": str(record.path),
        "data": config.data,
        "test_loss": loss,
        "test_acc": acc,
        "test_samples": len(split.x_test),
    }


def predict(run: str | Path, images: Sequence[str | Path]) -> list[Prediction]:
    """Classify image files (one path, or a list) with a trained run's network."""
    images = _image_list(images)
    record, model = load_model(run)
    names = record.meta["environment"].get("class_names") or []
    if record.meta["environment"].get("data_info"):  # trained on an image set
        return _predict_images(record, model, names, images)
    height, width, channels = model.arch.input_shape
    if height != width or channels != 1 or height < 4:
        raise RunError(
            f"{record.path}: predict reads images as square greyscale digits of at "
            f"least 4x4 pixels, but this network takes {height}x{width}x{channels} "
            "inputs. Use a run trained on square one-channel images of 4x4 or more."
        )
    batch = torch.stack([load_image(p, height) for p in images])  # (N, 1, H, W)
    batch = batch.contiguous(memory_format=torch.channels_last)
    probs = class_probabilities(model, batch, record.config.test_augment)
    out = []
    for path, p in zip(images, probs, strict=True):
        label = int(p.argmax())
        name = names[label] if label < len(names) else str(label)
        out.append(
            Prediction(str(path), label, name, float(p[label]), tuple(p.tolist()))
        )
    return out


def _predict_images(
    record: RunRecord, model: Network, names: list, images: Sequence[str | Path]
) -> list[Prediction]:
    """Predict for a run trained on an image folder, .npz or CIFAR files: each
    image converted to the net's (H, W, C) by the rules of `data.folders`."""
    import numpy as np

    from cnnlab.data.folders import image_for_net
    from cnnlab.training.loop import as_input

    shape = model.arch.input_shape
    loaded = [image_for_net(Path(p), shape) for p in images]
    batch = as_input(torch.from_numpy(np.stack([pixels for pixels, _ in loaded])))
    probs = class_probabilities(model, batch, record.config.test_augment)
    out = []
    for path, (_, note), p in zip(images, loaded, probs, strict=True):
        label = int(p.argmax())
        name = names[label] if label < len(names) else str(label)
        out.append(
            Prediction(str(path), label, name, float(p[label]), tuple(p.tolist()), note)
        )
    return out


@dataclass(frozen=True)
class Curves:
    """A written curves PNG: used as its path in a script, shown inline in Jupyter."""

    path: Path

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def _repr_png_(self) -> bytes:
        return self.path.read_bytes()


def plot_history(
    run_or_history: str | Path | History, path: str | Path | None = None
) -> Curves:
    """Draw train vs validation loss and accuracy into a PNG; returns its Curves."""
    if isinstance(run_or_history, History):
        if path is None:
            raise ValueError("give `path` when plotting a History object")
        return Curves(_plot_history(run_or_history.as_dict(), path))
    record = open_run(run_or_history)
    target = Path(path) if path is not None else record.path / CURVES_FILE
    title = record.meta["name"]
    return Curves(_plot_history(record.history().as_dict(), target, title=title))


# ------------------------------------------------------------------- Keras import

# Files `import_model` reads: Keras models (architecture, and weights where saved),
# and Keras code (every Sequential model built in it, read with `ast`, never run).
KERAS_MODEL_SUFFIXES = (".keras", ".json", ".h5")
KERAS_CODE_SUFFIXES = (".py", ".ipynb")


def import_model(source: str | Path, out: str | Path | None = None) -> Any:
    """Import a Keras Sequential model (.keras, .json, .h5) or the models built in
    Keras code (.py, .ipynb), reading them as data; the result's `lines()` say
    what was written."""
    path = Path(source)
    target = None if out is None else Path(out)
    suffix = path.suffix.lower()
    if suffix in KERAS_CODE_SUFFIXES:
        from cnnlab.interop.source import import_source

        return import_source(path, target)
    if suffix not in KERAS_MODEL_SUFFIXES:
        raise CnnlabError(
            f"{path}: cannot import a {suffix or 'suffix-less'!r} file. Give a Keras "
            "model (a .keras archive, a .json config from model.to_json(), a .h5 "
            "file) or Keras code (.py, .ipynb)."
        )
    from cnnlab.interop.keras import import_keras

    return import_keras(path, target)


# ------------------------------------------------------------------------ studies


def load_study(
    name_or_path: str | Path, *, seeds: Sequence[int] | None = None, **overrides: Any
) -> Study:
    """A built-in study ('quickstart', 'seed') or a study YAML file, with `seeds`
    and the training settings of `overrides` (TrainConfig's OVERRIDES: epochs,
    train_limit, test_limit, val_size, threads, device...) changed for every
    architecture where given, as `cnnlab study` flags do."""
    study = _load_study_file(name_or_path)
    return override(study, seeds=_seed_list(seeds), **overrides)


def run_study(
    study: Study | str | Path,
    out: str | Path = DEFAULT_OUT,
    *,
    executor: Literal["local", "ray"] = "local",
    workers: int | None = None,
    address: str | None = None,
    early_stop: str | None = None,
    cpus_per_trial: float | None = None,
    progress: StudyProgress | None = None,
    log: RunLogger | None = None,
) -> StudyReport:
    """Run every trial of a study (finished ones are skipped, interrupted ones
    resumed), then build its report: table, comparisons, diagnosis, figures,
    report.md and report.html under `out/<study>/report`. With `log`, each
    finished trial is also copied to MLflow or TensorBoard; a logger's failure is
    a warning line, never the study's."""
    if not isinstance(study, Study):
        study = load_study(study)
    if not study.archs:
        raise CnnlabError(
            f"{study.source}: has a search block and no architectures: run it with "
            "`cnnlab search`, or list architectures to compare."
        )
    chosen = make_executor(
        study, executor, workers, address, early_stop, cpus_per_trial
    )
    live = progress if progress is not None else default_study_progress()
    logging = None
    if log is not None:
        from cnnlab.interop.study_logging import StudyLogging

        logging = StudyLogging(log, study.name, Path(out))
    with _torch_state_kept(), _entered(live if progress is None else None):
        try:
            _run_study(study, out, chosen, live, on_finished=logging)
        finally:
            if logging is not None:
                logging.finish()
    return open_report(study.name, out)


def store_path(out: str | Path = DEFAULT_OUT) -> Path:
    """The study store of the output folder `out`."""
    return StudyLayout(out).store


def _open_store(out: str | Path) -> Store:
    path = store_path(out)
    if not path.is_file():
        raise RunError(
            f"{path}: no study store here. Run `cnnlab study ...` first, or pass the "
            "--out folder it used."
        )
    return Store(path)


def open_report(study: str, out: str | Path = DEFAULT_OUT) -> StudyReport:
    """Rebuild a study's report from its store, without training."""
    with _open_store(out) as store:
        return build_report(store, study, StudyLayout(out).report(study))


def list_trials(
    out: str | Path = DEFAULT_OUT,
    study: str | None = None,
    arch: str | None = None,
    status: Status | str | None = None,
) -> list[dict[str, Any]]:
    """The trials a study store holds (all columns, plus `epochs` recorded),
    filtered by study name, architecture label and status."""
    with _open_store(out) as store:
        rows = store.trial_rows(study, arch, _status(status))
        return [r.as_dict() | {"epochs": len(store.history(r.id))} for r in rows]


# ------------------------------------------------------------------------ logging


def make_logger(kind: str, uri: str | None = None) -> RunLogger:
    """An MLflow ('mlflow', `uri` the tracking URI) or TensorBoard ('tensorboard',
    `uri` the log folder) logger for `train`, `resume` and `run_study`."""
    from cnnlab.interop.loggers import make_logger as _make_logger

    return _make_logger(kind, uri)


def export_study(
    study: str, to: str, uri: str | None = None, out: str | Path = DEFAULT_OUT
) -> int:
    """Copy a study's finished trials from its store and run folders to MLflow or
    TensorBoard, without training; returns how many the backend now holds."""
    from cnnlab.interop.loggers import make_logger as _make_logger
    from cnnlab.interop.study_logging import export_trials

    logger = _make_logger(to, uri, flag="--to")
    with _open_store(out) as store:
        store.study(study)  # an unknown name: the error lists the known ones
        trials = store.trials(study)
    return export_trials(logger, trials, study, Path(out))


# ------------------------------------------------------------------------ export


def export_run(
    run: str | Path,
    format: Literal["onnx", "keras", "torchscript"],
    out: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a run's network (default: to <run>/model.onnx|.keras|.pt); its path.
    An existing file is replaced only with `overwrite`, and only if an export
    wrote it: never a run's or a study store's files."""
    from cnnlab.interop.export import check_format, default_path, export_network

    check_format(format)
    record, model = load_model(run)
    env = record.meta.get("environment")
    names = env.get("class_names") if isinstance(env, dict) else None
    names = names if isinstance(names, list) else None
    path = Path(out) if out is not None else default_path(record.path, format)
    return export_network(model, format, path, names, overwrite, record.path)


def export_signature(
    run: str | Path, format: Literal["onnx", "keras", "torchscript"]
) -> Signature:
    """What `format`'s export of a run takes and gives, and how to load it."""
    from cnnlab.interop.export import check_format, signature

    check_format(format)
    return signature(open_run(run).architecture(), format)


# ------------------------------------------------------------------------ search


def load_search(
    name_or_path: str | Path, *, seeds: Sequence[int] | None = None, **overrides: Any
) -> SearchSpec:
    """A study file with a `search:` block, validated (docs/search.md); `overrides`
    (as in load_study) change every candidate's and finalist's training settings,
    `seeds` the finalists' seeds."""
    study = load_study(name_or_path, seeds=seeds, **overrides)
    if study.search is None:
        raise CnnlabError(
            f"{study.source}: has no 'search' block, so there is nothing to search. "
            "Run it with `cnnlab study`, or add a search block (docs/search.md)."
        )
    return parse_search(study)


def run_search(
    search: SearchSpec | str | Path,
    out: str | Path = DEFAULT_OUT,
    *,
    trials: int | None = None,
    time_budget: float | None = None,
    executor: Literal["local", "ray"] = "local",
    workers: int | None = None,
    address: str | None = None,
    cpus_per_trial: float | None = None,
    progress: StudyProgress | None = None,
) -> SearchReport:
    """Search a space (one seed per candidate, validation only; resumes a killed
    search), re-train the top candidates over seeds as the study `<name>-final`
    (the only test-set reads), write `<out>/<name>/best.yaml` and the report."""
    import_optuna()  # say how to install it before anything else
    if not isinstance(search, SearchSpec):
        search = load_search(search)
    live = progress if progress is not None else default_study_progress()
    with _torch_state_kept(), _entered(live if progress is None else None):
        result = _run_search(
            search, out, executor=executor, workers=workers, address=address,
            cpus_per_trial=cpus_per_trial, trials=trials, time_budget=time_budget,
            progress=live,
        )  # fmt: skip
    return build_search_report(result)
