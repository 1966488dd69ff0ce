"""Run records: one folder per trained model, written atomically.

    <run>/spec.yaml       the resolved architecture
    <run>/run.json        status, training config, environment, final test metrics
    <run>/history.csv     one row per finished epoch
    <run>/checkpoint.pt   weights + optimizer + RNG states after the last epoch
    <run>/weights.pt      the final weights (state dict), once training completes
    <run>/curves.png      train vs validation loss and accuracy per epoch

Every file is written to a temporary name in the same folder and renamed into place,
so a killed process leaves the previous complete version, never a torn one.
Checkpoints hold only tensors and plain containers and load with
`weights_only=True`: opening someone else's run folder executes no code.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import pickle
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data import standardize
from cnnlab.errors import CnnlabError, RunError
from cnnlab.nn import convpath
from cnnlab.nn.spec import (
    SPEC_LIMIT,
    Architecture,
    dump_architecture,
    load_architecture,
)
from cnnlab.training.config import TrainConfig
from cnnlab.training.loop import HISTORY_KEYS, History, TrainState
from cnnlab.training.status import Status
from cnnlab.util.fsio import (
    TEMP_NAME,
    atomic_write,
    atomic_write_text,
    check_inside,
    folder_lock,
    read_bounded,
)
from cnnlab.util.text import slug

FORMAT = 1  # bump when a run folder's layout changes incompatibly
RUN_FILE = "run.json"
SPEC_FILE = "spec.yaml"
HISTORY_FILE = "history.csv"
CHECKPOINT_FILE = "checkpoint.pt"
WEIGHTS_FILE = "weights.pt"
CURVES_FILE = "curves.png"
PREDICTIONS_FILE = "predictions.npz"  # per-image answers on the test/validation set
PREDICTION_SPLITS = ("test", "val")
RUN_JSON_LIMIT = 16 << 20  # run.json: config, environment, a few scores
# What a run folder may hold and --overwrite may delete: cnnlab's files, its
# exports (model.onnx, model.keras, ...) and what a killed atomic write left.
RUN_FILES = (
    RUN_FILE,
    SPEC_FILE,
    HISTORY_FILE,
    CHECKPOINT_FILE,
    WEIGHTS_FILE,
    CURVES_FILE,
    PREDICTIONS_FILE,
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _history_csv(history: History) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_KEYS)
    for row in history.epochs:
        writer.writerow(["" if row.get(k) is None else row[k] for k in HISTORY_KEYS])
    return buf.getvalue()


def _is_run_folder(path: Path) -> bool:
    return (path / RUN_FILE).is_file() and (path / SPEC_FILE).is_file()


def is_run_folder(path: Path) -> bool:
    """True for a folder a training run wrote (it holds run.json and spec.yaml)."""
    try:
        return _is_run_folder(path)
    except OSError:
        return False


def run_lock(path: Path, create: bool = False) -> Any:
    """The one writer of a run folder: held by train, resume, evaluate's repairs and
    study trials for as long as they write; a second writer is refused by PID."""
    return folder_lock(path, "a training run", create=create)


def spec_hash(text: str) -> str:
    """The fingerprint run.json keeps of spec.yaml, to notice an edit on --resume."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _foreign_entries(path: Path) -> list[str]:
    """What a run folder holds besides cnnlab's own files (a nested study, notes)."""
    return sorted(
        entry.name
        for entry in path.iterdir()
        if not (
            entry.is_file()
            and not entry.is_symlink()
            and (
                entry.name in RUN_FILES
                or entry.name.startswith("model.")
                or TEMP_NAME.match(entry.name)
            )
        )
    )


def check_overwrite(path: Path) -> None:
    """--overwrite deletes only a cnnlab run folder holding nothing but its files."""
    if not path.is_dir() or path.is_symlink():
        raise RunError(
            f"{path}: exists and is not a folder; refusing to delete it with "
            "--overwrite. Choose another --out."
        )
    entries = list(path.iterdir())
    if entries and not _is_run_folder(path):
        raise RunError(
            f"{path}: exists and is not a cnnlab run folder; refusing to delete "
            "it with --overwrite. Choose another --out."
        )
    foreign = _foreign_entries(path) if entries else []
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RunError(
            f"{path}: the run folder also holds {shown}, which --overwrite would "
            "delete; refusing. Move them out of the folder, or choose another --out."
        )


@dataclass
class RunRecord:
    """An open run folder and what its run.json says."""

    path: Path
    meta: dict[str, Any]

    @property
    def status(self) -> Status | str:
        """The run's Status; an unknown value (a newer cnnlab's) as written."""
        value = self.meta["status"]
        return Status(value) if value in Status._value2member_map_ else value

    def is_complete(self, epochs: int) -> bool:
        """Completed with at least `epochs` epochs: nothing left to train."""
        done = self.meta.get("epochs_done", 0)
        return self.status == Status.COMPLETED and done >= epochs

    @property
    def config(self) -> TrainConfig:
        """The training config saved in run.json."""
        doc = self.meta["config"]
        where = self.path / RUN_FILE
        if not isinstance(doc, dict):
            raise RunError(f"{where}: 'config' is not a mapping. Retrain the run.")
        try:
            return TrainConfig.from_dict(doc)
        except CnnlabError as err:
            raise RunError(f"{where}: config: {err} Retrain the run.") from err

    def architecture(self) -> Architecture:
        return load_architecture(self.path / SPEC_FILE)

    @property
    def conv_path(self) -> str | None:
        """The path the run's wide conv layers trained with (nn.convpath): as
        recorded, or NNPACK's for a run recorded before the choice was."""
        env = self.meta.get("environment")
        if not isinstance(env, dict):
            return convpath.LEGACY
        path = env.get("conv_path", convpath.LEGACY)
        return path if path in convpath.PATHS else None

    def standardization(self, channels: int) -> dict[str, list[float]] | None:
        """The per-channel mean and std the run standardises its inputs with
        (data.standardize), checked against its `channels`; None when the run
        feeds [0, 1] pixels as they are."""
        if not self.config.standardize:
            return None
        where = str(self.path / RUN_FILE)
        return standardize.read_entry(self.meta.get(standardize.KEY), where, channels)

    def prepare_input(self, model: Any) -> None:
        """Give `model` (a Network) the run's input standardisation, if any."""
        model.set_standardization(self.standardization(model.arch.input_shape[2]))

    def check_spec_unchanged(self) -> None:
        """spec.yaml must be the one the run started with (run.json keeps its hash;
        runs made before it was kept are not checked)."""
        kept = self.meta.get("spec_hash")
        path = self.path / SPEC_FILE
        text = read_bounded(path, SPEC_LIMIT, "an architecture file", RunError)
        if kept is None or spec_hash(text.decode("utf-8", "replace")) == kept:
            return
        raise RunError(
            f"{path}: edited since the run started (its hash differs from the one in "
            f"{RUN_FILE}); resuming would mix two networks in one history. Restore "
            f"the file, or train the edited architecture anew: cnnlab train {path} "
            "--out NEW_FOLDER."
        )

    def save_meta(self, **changes: Any) -> None:
        self.meta.update(changes, updated=now())
        atomic_write_text(self.path / RUN_FILE, json.dumps(self.meta, indent=2) + "\n")

    def history(self) -> History:
        """The per-epoch history as written after the last finished epoch."""
        path = self.path / HISTORY_FILE
        if not path.is_file():
            return History()
        rows = []
        with open(path, newline="", encoding="utf-8") as fh:
            for raw in csv.DictReader(fh):
                row: dict[str, Any] = {"epoch": int(raw["epoch"])}
                for key in HISTORY_KEYS[1:]:
                    row[key] = float(raw[key]) if raw.get(key) else None
                rows.append(row)
        return History(rows)

    def save_checkpoint(self, model: torch.nn.Module, state: TrainState) -> None:
        """Checkpoint after an epoch: weights, optimizer, RNGs, history."""
        payload = {
            "format": FORMAT,
            "epoch": state.epoch,
            "model": model.state_dict(),
            "optimizer": state.optimizer,
            "shuffle_rng": state.shuffle_rng,
            "torch_rng": state.torch_rng,
            "cuda_rng": state.cuda_rng,  # None unless the model is on CUDA
            "scaler": state.scaler,  # None unless the run trains in fp16
            "history": state.history.epochs,
        }
        atomic_write(self.path / CHECKPOINT_FILE, lambda fh: torch.save(payload, fh))
        self._save_progress(state)

    def _save_progress(self, state: TrainState) -> None:
        """history.csv and run.json's epochs_done, as of the checkpoint `state`."""
        atomic_write_text(self.path / HISTORY_FILE, _history_csv(state.history))
        self.save_meta(epochs_done=state.epoch)

    def load_checkpoint(
        self, model: torch.nn.Module, repair: bool = True
    ) -> TrainState | None:
        """Restore `model` from the last checkpoint (and give it the run's input
        standardisation); None if no epoch finished yet.

        The checkpoint is the source of truth: a kill between writing it and writing
        history.csv / run.json left those one epoch behind, so they are rewritten
        (with `repair`, by the folder's writer; readers leave them to it).
        """
        self.prepare_input(model)
        path = self.path / CHECKPOINT_FILE
        if not path.is_file():
            return None
        payload = _load_tensors(path)
        _check_checkpoint(payload, path)
        _load_weights(model, payload["model"], path)
        state = TrainState(
            epoch=int(payload["epoch"]),
            history=History([dict(r) for r in payload["history"]]),
            optimizer=payload["optimizer"],
            shuffle_rng=payload["shuffle_rng"],
            torch_rng=payload["torch_rng"],
            cuda_rng=payload.get("cuda_rng"),  # absent from older checkpoints
            scaler=payload.get("scaler"),  # likewise
        )
        if repair and self.meta.get("epochs_done") != state.epoch:
            self._save_progress(state)
        return state

    def save_weights(self, model: torch.nn.Module) -> None:
        atomic_write(
            self.path / WEIGHTS_FILE, lambda fh: torch.save(model.state_dict(), fh)
        )

    def save_predictions(self, answers: dict[str, Any]) -> None:
        """Per split ("test", "val"): the labels, the predicted classes and the
        probability of the true class of each image, as arrays."""
        arrays = {
            f"{split}_{key}": np.asarray(value)
            for split, scores in answers.items()
            for key, value in scores.items()
        }
        atomic_write(self.path / PREDICTIONS_FILE, lambda fh: np.savez(fh, **arrays))

    def load_weights(self, model: torch.nn.Module) -> None:
        """Final weights if training finished, else the last checkpoint's; and the
        run's input standardisation."""
        weights = self.path / WEIGHTS_FILE
        if weights.is_file():
            self.prepare_input(model)
            _load_weights(model, _load_tensors(weights), weights)
        elif self.load_checkpoint(model, repair=False) is None:
            raise RunError(
                f"{self.path}: no weights yet (no epoch has finished). Train or resume "
                f"it first: cnnlab train --resume {self.path}."
            )


def load_predictions(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """A run's saved per-image answers by split ({} when it has none: a run made
    before they were kept, or one still training)."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as err:
        raise RunError(
            f"{path}: unreadable ({err}). Delete it; `cnnlab evaluate` can score "
            "the run again."
        ) from err
    answers: dict[str, dict[str, np.ndarray]] = {}
    for name, value in arrays.items():
        split, _, key = name.partition("_")
        if split in PREDICTION_SPLITS:
            answers.setdefault(split, {})[key] = value
    return answers


def _load_tensors(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise _unreadable(path, "the file is corrupt or not from cnnlab") from err
        raise _unreadable(
            path,
            "it holds Python objects, not just tensors, and loading them could "
            "run code, so it is refused",
        ) from err
    except Exception as err:  # torch raises many types for a bad or hostile file
        raise _unreadable(path, "the file is corrupt or not from cnnlab") from err


def _unreadable(path: Path, why: str) -> RunError:
    return RunError(
        f"{path}: cannot be read as a cnnlab checkpoint: {why}. Retrain the run or "
        "restore the file."
    )


_CHECKPOINT_KEYS = (
    "format",
    "epoch",
    "model",
    "optimizer",
    "shuffle_rng",
    "torch_rng",
    "history",
)
# Optional: "cuda_rng", the CUDA generators' states of a run on a GPU (None on the
# CPU); checkpoints written before it was kept lack the key and still load.
# Optional too: "scaler", fp16's gradient-scaler state (None in fp32 and bf16).


def _check_checkpoint(payload: Any, path: Path) -> None:
    """A checkpoint must be a mapping of this format with every key present."""
    if not isinstance(payload, dict):
        raise RunError(
            f"{path}: not a cnnlab checkpoint (a {type(payload).__name__}, not a "
            "mapping). Retrain the run or restore the file."
        )
    version = payload.get("format", 0)
    if isinstance(version, int) and version > FORMAT:
        raise RunError(
            f"{path}: checkpoint format {version} is newer than this cnnlab "
            f"understands ({FORMAT}). Upgrade cnnlab to resume this run."
        )
    missing = [key for key in _CHECKPOINT_KEYS if key not in payload]
    if missing:
        raise RunError(
            f"{path}: incomplete checkpoint (missing {', '.join(missing)}). "
            "Retrain the run or restore the file."
        )
    cuda_rng = payload.get("cuda_rng")
    if cuda_rng is not None and not (
        isinstance(cuda_rng, list)
        and all(
            isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda_rng
        )
    ):
        raise RunError(
            f"{path}: 'cuda_rng' is not a list of CUDA generator states (uint8 "
            "tensors). Retrain the run or restore the file."
        )
    scaler = payload.get("scaler")
    if scaler is not None and not (
        isinstance(scaler, dict) and all(isinstance(k, str) for k in scaler)
    ):
        raise RunError(
            f"{path}: 'scaler' is not a gradient scaler's state (a mapping). "
            "Retrain the run or restore the file."
        )


def _load_weights(model: torch.nn.Module, state: Any, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise RunError(
            f"{path}: the saved weights do not fit the run's architecture "
            "(was the file copied from another run?). Retrain the run."
        ) from err


def check_new_run(path: Path, overwrite: bool = False) -> None:
    """Refuse an --out that exists, unless --overwrite may replace it."""
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise RunError(
            f"{path}: the output folder exists. Resume it with --resume {path}, "
            "replace it with --overwrite, or choose another --out."
        )
    check_overwrite(path)


def make_run_folder(path: Path) -> None:
    """Create the run folder (and its parents) if missing, before it is locked."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(
            f"{path}: cannot create the output folder ({err.strerror}). Choose a "
            "writable --out."
        ) from err


def create_run(
    path: Path,
    arch: Architecture,
    config: TrainConfig,
    env: dict[str, Any],
    overwrite: bool = False,
    stats: dict[str, list[float]] | None = None,
) -> RunRecord:
    """Make a new run folder; refuse to clobber an existing one unless told to.

    `stats`: the input standardisation (data.standardize) a run with
    `config.standardize` applies. Call it holding `run_lock(path)`: an overwritten
    folder is emptied, not deleted, so the lock (on the folder itself) stays on it.
    """
    make_run_folder(path)
    entries = list(path.iterdir())
    if entries:  # checked again under the lock: another writer may have been first
        check_new_run(path, overwrite)
        for entry in entries:
            entry.unlink()
    spec_text = dump_architecture(arch)
    meta = {
        "format": FORMAT,
        "name": arch.name,
        "status": Status.RUNNING,
        "created": now(),
        "config": config.to_dict(),
        "environment": env,
        "epochs_done": 0,
        "test": None,
        "spec_hash": spec_hash(spec_text),
        **({standardize.KEY: stats} if stats is not None else {}),
    }
    record = RunRecord(path, meta)
    try:
        atomic_write_text(path / SPEC_FILE, spec_text)
        record.save_meta()
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # no half-made run folder
        raise
    return record


def open_run(path: str | Path) -> RunRecord:
    """Open an existing run folder, checking it is one this cnnlab can read."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(
            f"{path}: no such run folder. Give the folder a training run wrote."
        )
    if not _is_run_folder(path):
        raise RunError(
            f"{path}: not a cnnlab run folder (no {RUN_FILE} and {SPEC_FILE}). "
            "Give the folder a training run wrote."
        )
    try:
        text = read_bounded(
            path / RUN_FILE, RUN_JSON_LIMIT, "a run.json file", RunError
        )
        meta = json.loads(text.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunError(
            f"{path / RUN_FILE}: unreadable ({err}). Retrain the run."
        ) from err
    if not isinstance(meta, dict) or "config" not in meta or "status" not in meta:
        raise RunError(f"{path / RUN_FILE}: missing fields. Retrain the run.")
    if meta.get("format", 0) > FORMAT:
        raise RunError(
            f"{path}: run format {meta.get('format')} is newer than this cnnlab "
            f"understands ({FORMAT}). Upgrade cnnlab."
        )
    return RunRecord(path, meta)


def default_run_path(name: str, root: Path = Path("runs")) -> Path:
    """runs/<name>-<UTC time>: a fresh folder that never collides with an old one.

    The architecture's name is the user's: it goes in by the slug rule only, so a
    name such as '../../x' or one with a NUL byte stays a folder name under `root`.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = slug(name) or "run"
    path = root / f"{name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{name}-{stamp}-{suffix}"
    return check_inside(path, root)
