"""cnnlab: design, train and compare convolutional networks on image data.

The public names load on first use (PEP 562), so `import cnnlab` and the
`cnnlab` command start without PyTorch: the command sets its signal handlers
before anything heavy is imported.
"""

from __future__ import annotations

from typing import Any

from cnnlab._version import __version__ as __version__
from cnnlab.errors import CnnlabError as CnnlabError
from cnnlab.errors import DataError as DataError
from cnnlab.errors import RunError as RunError
from cnnlab.errors import SpecError as SpecError

# Each public name and the module it lives in.
_HOMES = {
    "Activation": "cnnlab.nn.spec",
    "Architecture": "cnnlab.nn.spec",
    "AveragePooling2D": "cnnlab.nn.spec",
    "BatchNormalization": "cnnlab.nn.spec",
    "build_model": "cnnlab.nn.model",
    "Conv2D": "cnnlab.nn.spec",
    "Dense": "cnnlab.nn.spec",
    "describe_data": "cnnlab.api",
    "Dropout": "cnnlab.nn.spec",
    "evaluate_run": "cnnlab.api",
    "export_run": "cnnlab.api",
    "export_signature": "cnnlab.api",
    "export_study": "cnnlab.api",
    "Flatten": "cnnlab.nn.spec",
    "get_data": "cnnlab.api",
    "import_model": "cnnlab.api",
    "LeakyReLU": "cnnlab.nn.spec",
    "list_trials": "cnnlab.api",
    "load": "cnnlab.api",
    "load_architecture": "cnnlab.nn.spec",
    "load_model": "cnnlab.api",
    "load_search": "cnnlab.api",
    "load_study": "cnnlab.api",
    "MaxPooling2D": "cnnlab.nn.spec",
    "open_report": "cnnlab.api",
    "plot_history": "cnnlab.api",
    "predict": "cnnlab.api",
    "presets": "cnnlab.api",
    "PresetFacts": "cnnlab.api",
    "Prediction": "cnnlab.api",
    "resume": "cnnlab.api",
    "run_search": "cnnlab.api",
    "run_study": "cnnlab.api",
    "RunResult": "cnnlab.api",
    "Status": "cnnlab.training.status",
    "Study": "cnnlab.studies.study",
    "StudyReport": "cnnlab.reporting.report",
    "summary": "cnnlab.api",
    "train": "cnnlab.api",
    "train_config": "cnnlab.api",
    "TrainConfig": "cnnlab.training.config",
}

__all__ = sorted([*_HOMES, "CnnlabError", "DataError", "RunError", "SpecError"])


def _home(module: str) -> Any:
    """The module a public name lives in, imported now (each one named, so the
    import graph sees them)."""
    if module == "cnnlab.api":
        from cnnlab import api as home
    elif module == "cnnlab.nn.spec":
        from cnnlab.nn import spec as home
    elif module == "cnnlab.nn.model":
        from cnnlab.nn import model as home
    elif module == "cnnlab.training.config":
        from cnnlab.training import config as home
    elif module == "cnnlab.training.status":
        from cnnlab.training import status as home
    elif module == "cnnlab.studies.study":
        from cnnlab.studies import study as home
    else:
        from cnnlab.reporting import report as home
    return home


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
    value = getattr(_home(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
