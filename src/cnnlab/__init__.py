"""cnnlab: design, train and compare convolutional networks on MNIST-family data."""

__version__ = "0.1.0"

from cnnlab.api import (  # noqa: E402
    Prediction,
    RunResult,
    evaluate_run,
    load,
    load_model,
    plot_history,
    predict,
    resume,
    summary,
    train,
)
from cnnlab.config import TrainConfig  # noqa: E402
from cnnlab.errors import CnnlabError, DataError, RunError, SpecError  # noqa: E402
from cnnlab.model import build_model  # noqa: E402
from cnnlab.spec import (  # noqa: E402
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
    "TrainConfig",
    "build_model",
    "evaluate_run",
    "load",
    "load_architecture",
    "load_model",
    "plot_history",
    "predict",
    "resume",
    "summary",
    "train",
]
