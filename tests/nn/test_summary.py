"""The notebook's nine networks: Keras totals, output shapes and printed summaries."""

import pytest

from cnnlab.nn.presets import NOTEBOOK_NETS, load_preset, preset_names
from cnnlab.nn.shapes import infer
from cnnlab.nn.summary import format_summary
from helpers import TESTS

GOLDEN = TESTS / "golden"

# (total, trainable, non-trainable) from each model.summary() in the notebook.
NOTEBOOK_TOTALS = {
    1: (23_337_610, 23_337_610, 0),
    2: (15_146, 15_050, 96),
    3: (412, 412, 0),
    4: (118_258, 118_258, 0),
    5: (11_208_922, 11_208_826, 96),
    6: (13_154_522, 13_154_426, 96),
    7: (1_310_522, 1_310_426, 96),
    8: (16_996_122, 16_996_026, 96),
    9: (6_752_730, 6_752_730, 0),
}

# Output shape and parameter count of every layer, read off the notebook's summaries.
_P5_HEAD = [((28, 28, 16), 800), ((26, 26, 16), 0), ((26, 26, 16), 64),
            ((26, 26, 16), 0), ((20, 20, 32), 25120), ((9, 9, 32), 0),
            ((9, 9, 32), 128), ((9, 9, 32), 0), ((2592,), 0)]  # fmt: skip
_P6_HEAD = [((28, 28, 16), 800), ((27, 27, 16), 0), ((27, 27, 16), 64),
            ((27, 27, 16), 0), ((21, 21, 32), 25120), ((10, 10, 32), 0),
            ((10, 10, 32), 128), ((10, 10, 32), 0), ((3200,), 0)]  # fmt: skip
NOTEBOOK_LAYERS = {
    1: [((26, 26, 512), 5120), ((26, 26, 256), 1179904), ((173056,), 0),
        ((128,), 22151296), ((10,), 1290)],
    2: [((26, 26, 16), 160), ((26, 26, 16), 2320), ((13, 13, 16), 0),
        ((11, 11, 16), 2320), ((5, 5, 16), 0), ((5, 5, 16), 64), ((5, 5, 16), 0),
        ((3, 3, 32), 4640), ((1, 1, 32), 0), ((1, 1, 32), 128), ((1, 1, 32), 0),
        ((32,), 0), ((128,), 4224), ((10,), 1290)],
    3: [((28, 28, 1), 26), ((14, 14, 1), 0), ((14, 14, 1), 0), ((10, 10, 2), 52),
        ((5, 5, 2), 0), ((5, 5, 2), 0), ((50,), 0), ((4,), 204), ((8,), 40),
        ((10,), 90)],
    4: [((28, 28, 8), 208), ((14, 14, 8), 0), ((14, 14, 8), 0), ((10, 10, 16), 3216),
        ((5, 5, 16), 0), ((5, 5, 16), 0), ((400,), 0), ((200,), 80200),
        ((128,), 25728), ((64,), 8256), ((10,), 650)],
    5: _P5_HEAD + [((3200,), 8297600), ((800,), 2560800), ((400,), 320400),
                   ((10,), 4010)],
    6: _P6_HEAD + [((3200,), 10243200), ((800,), 2560800), ((400,), 320400),
                   ((10,), 4010)],
    7: _P6_HEAD + [((400,), 1280400), ((10,), 4010)],
    8: _P6_HEAD + [((3200,), 10243200), ((1600,), 5121600), ((800,), 1280800),
                   ((400,), 320400), ((10,), 4010)],
    9: [((28, 28, 16), 800), ((27, 27, 16), 0), ((27, 27, 16), 0),
        ((21, 21, 32), 25120), ((10, 10, 32), 0), ((10, 10, 32), 0), ((3200,), 0),
        ((1600,), 5121600), ((800,), 1280800), ((400,), 320400), ((10,), 4010)],
}  # fmt: skip


@pytest.mark.parametrize("number", sorted(NOTEBOOK_TOTALS))
def test_notebook_totals(number: int) -> None:
    info = infer(load_preset(str(number)), num_classes=10)
    assert (info.total, info.trainable, info.non_trainable) == NOTEBOOK_TOTALS[number]


@pytest.mark.parametrize("number", sorted(NOTEBOOK_LAYERS))
def test_notebook_layer_shapes_and_params(number: int) -> None:
    info = infer(load_preset(str(number)))
    got = [(layer.output_shape, layer.params) for layer in info.layers]
    assert got == NOTEBOOK_LAYERS[number]


def test_presets_by_name_and_number_agree() -> None:
    assert preset_names()[:9] == list(NOTEBOOK_NETS.values())
    for number, name in NOTEBOOK_NETS.items():
        assert load_preset(str(number)) == load_preset(name)


def test_training_flops_match_docs_benchmarks() -> None:
    # The training FLOPs per sample docs/benchmarks.md uses (3 x forward).
    expected = {2: 11.9e6, 4: 3.5e6, 9: 110e6, 1: 4.94e9}
    for number, flops in expected.items():
        got = 3 * infer(load_preset(str(number))).flops
        assert got == pytest.approx(flops, rel=0.02)  # the notes round


@pytest.mark.parametrize("name", ["conv3-small", "conv7-dropout"])
def test_summary_matches_golden_file(name: str, request: pytest.FixtureRequest) -> None:
    text = format_summary(infer(load_preset(name))) + "\n"
    golden = GOLDEN / f"summary-{name}.txt"
    if request.config.getoption("--update-golden"):
        golden.write_text(text)
    assert text == golden.read_text()
