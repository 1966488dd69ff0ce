"""cnnlab: design, train and compare convolutional networks on MNIST-family data."""

from cnnlab._version import __version__ as __version__
from cnnlab.api import (
    Prediction,
    RunResult,
    evaluate_run,
    export_run,
    export_study,
    import_model,
    list_trials,
    load,
    load_model,
    load_study,
    open_report,
    plot_history,
    predict,
    resume,
    run_study,
    summary,
    train,
)
from cnnlab.errors import CnnlabError, DataError, RunError, SpecError
from cnnlab.nn.model import build_model
from cnnlab.nn.spec import (
    Activation,
    Architecture,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPooling2D,
    load_architecture,
)
from cnnlab.reporting.report import StudyReport
from cnnlab.studies.study import Study
from cnnlab.training.config import TrainConfig
from cnnlab.training.status import Status

__all__ = [
    "Activation",
    "Architecture",
    "AveragePooling2D",
    "BatchNormalization",
    "CnnlabError",
    "Conv2D",
    "DataError",
    "Dense",
    "Dropout",
    "Flatten",
    "LeakyReLU",
    "MaxPooling2D",
    "Prediction",
    "RunError",
    "RunResult",
    "SpecError",
    "Status",
    "Study",
    "StudyReport",
    "TrainConfig",
    "build_model",
    "evaluate_run",
    "export_run",
    "export_study",
    "import_model",
    "list_trials",
    "load",
    "load_architecture",
    "load_model",
    "load_study",
    "open_report",
    "plot_history",
    "predict",
    "resume",
    "run_study",
    "summary",
    "train",
]
