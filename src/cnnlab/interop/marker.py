"""What every exported file says about itself: its tensors' names and layout, and
the marker by which a later `export --overwrite` knows the file is an export (an
ONNX metadata key, a TorchScript extra file, a member of the .keras zip)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnlab._version import __version__

if TYPE_CHECKING:
    from cnnlab.nn.model import Network

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
INPUT_CONVENTION = "(N, H, W, C) float32 in [0, 1], channels last as in Keras"
# The marker of a file an export wrote, inside the file itself: an ONNX metadata
# key, a TorchScript extra file, a member of the .keras zip (see is_export).
MARKER_KEY = "cnnlab_version"
MARKER_FILE = "cnnlab.json"


def metadata(model: Network, class_names: list[str] | None) -> dict[str, Any]:
    """The key/value pairs stored in an exported file."""
    return {
        "cnnlab_version": __version__,
        "architecture": model.arch.name,
        "class_names": list(class_names or []),
        "input": f"{INPUT_NAME}: {INPUT_CONVENTION}",
        "output": f"{OUTPUT_NAME}: (N, classes), softmax applied",
    }
