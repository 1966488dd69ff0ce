"""Fit an architecture to the data it trains on: its input shape and class count.

An architecture document without `input_shape` takes the data's (H, W, C). A
preset (the notebook's nets, `fast`) takes the data's shape and its number of
classes: its final Dense layer's units follow the class count, as the notebook's
`num_classes` does. An architecture file that states its input_shape keeps it, and
a shape that differs from the data's is an error (`shapes.check_input`).
"""

from __future__ import annotations

import dataclasses

from cnnlab.nn.spec import Architecture, Dense

PRESET_PREFIX = "preset "  # the `source` of a preset (presets.load_preset)


def adapt_to_data(
    arch: Architecture, shape: tuple[int, int, int], num_classes: int
) -> Architecture:
    """`arch` with the data's shape and (for presets) class count where it may
    take them; unchanged otherwise."""
    preset = arch.source.startswith(PRESET_PREFIX)
    changes: dict = {}
    if (preset or not arch.shape_given) and tuple(arch.input_shape) != tuple(shape):
        changes["input_shape"] = tuple(shape)
    last = arch.layers[-1] if arch.layers else None
    if preset and isinstance(last, Dense) and last.units != num_classes:
        layers = (*arch.layers[:-1], dataclasses.replace(last, units=num_classes))
        changes["layers"] = layers
    if not changes:
        return arch
    return dataclasses.replace(arch, shape_given=True, **changes)
