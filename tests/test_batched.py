"""Seeds trained as one batched computation equal seeds trained one by one."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import cnnlab
from cnnlab.batched import StackedNetwork, fit_seeds, train_seeds
from cnnlab.config import TrainConfig
from cnnlab.data import load_dataset, split_dataset
from cnnlab.errors import CnnlabError
from cnnlab.model import build_model
from cnnlab.runs import open_run
from cnnlab.spec import parse_architecture
from cnnlab.store import Store
from cnnlab.train import as_input, fit

SEEDS = [0, 1, 2]
CONFIG = TrainConfig(epochs=2, train_limit=500, val_size=200, test_limit=200)
# Grouped and plain convolutions round differently; Adam turns a gradient near zero
# (a conv bias before batch norm has one) into a unit step, so a single tensor can
# drift by ~1e-3 while the network as a whole and its outputs stay much closer.
WEIGHT_TOL = 1e-3  # |batched - alone| / |alone| over all weights and statistics
OUTPUT_TOL = 1e-3  # absolute, on logits of the validation images
METRIC_TOL = 1e-4  # relative, on loss / accuracy per epoch


def tiny(dropout: float = 0.0) -> cnnlab.Architecture:
    layers: list = [
        {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
        "BatchNormalization",
        {"MaxPooling2D": {"pool_size": 2}},
    ]
    if dropout:
        layers.append({"Dropout": {"rate": dropout}})
    layers += ["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]
    return parse_architecture({"name": "tiny", "layers": layers})


@pytest.fixture(scope="module")
def split():
    return split_dataset(
        load_dataset("mnist"), val_size=200, train_limit=500, test_limit=200
    )


def assert_same_training(arch, split, seeds, config=CONFIG) -> None:
    nets, histories = fit_seeds(arch, config, seeds, split, 10)
    for seed, net, history in zip(seeds, nets, histories, strict=True):
        alone = build_model(arch, 10, seed=seed)
        expected = fit(alone, split, config.replace(seed=seed))
        got = net.state_dict()
        gaps = [
            (got[key] - want).float().norm() ** 2
            for key, want in alone.state_dict().items()
        ]
        norms = [want.float().norm() ** 2 for want in alone.state_dict().values()]
        gap = float(sum(gaps).sqrt() / sum(norms).sqrt())
        assert gap < WEIGHT_TOL, (seed, gap)
        net.eval(), alone.eval()
        images = as_input(split.x_val)
        torch.testing.assert_close(net(images), alone(images), rtol=0, atol=OUTPUT_TOL)
        assert len(history) == len(expected) == config.epochs
        for row, want_row in zip(history.epochs, expected.epochs, strict=True):
            for key in ("loss", "acc", "val_loss", "val_acc"):
                assert row[key] == pytest.approx(want_row[key], rel=METRIC_TOL)


def test_stacked_initial_weights_and_outputs_equal_each_seed() -> None:
    """Every layer kind, incl. Keras's asymmetric padding and flatten order."""
    arch = parse_architecture(
        {
            "name": "mixed",
            "layers": [
                {"Conv2D": {"filters": 3, "kernel_size": 4, "padding": "same"}},
                {"LeakyReLU": {}},
                {"AveragePooling2D": {"pool_size": 3, "padding": "same"}},
                {"Dense": {"units": 5, "activation": "tanh"}},
                "BatchNormalization",
                {"MaxPooling2D": {"pool_size": 2, "strides": 2, "padding": "same"}},
                "Flatten",
                {"Dense": {"units": 7, "activation": "elu"}},
                "BatchNormalization",
                {"Dense": {"units": 10, "activation": "softmax"}},
            ],
        }
    )
    nets = [build_model(arch, 10, seed=s) for s in SEEDS]
    stack = StackedNetwork(nets, [torch.Generator() for _ in SEEDS])
    copies = [build_model(arch, 10) for _ in SEEDS]
    stack.unstack_to(copies)
    for net, copy in zip(nets, copies, strict=True):
        for key, value in net.state_dict().items():
            assert torch.equal(copy.state_dict()[key], value), key
    images = torch.randint(0, 256, (len(SEEDS), 6, 28, 28), dtype=torch.uint8)
    stacked_in = images.transpose(0, 1).float().div(255.0)
    stack.eval()
    out = stack(stacked_in.contiguous(memory_format=torch.channels_last))
    for k, net in enumerate(nets):
        want = net.eval()(as_input(images[k]))
        torch.testing.assert_close(out[k], want, rtol=1e-5, atol=1e-5)


def test_batched_seeds_train_like_one_by_one(split) -> None:
    assert_same_training(tiny(), split, SEEDS)


def test_dropout_masks_are_each_seeds_own(split) -> None:
    """Each seed draws its masks as fit would: same training, seeds differ."""
    arch = tiny(dropout=0.3)
    assert_same_training(arch, split, [3, 4])
    bigger = split_dataset(load_dataset("mnist"), val_size=500, train_limit=2000)
    config = CONFIG.replace(lr=0.005)  # a tiny net: a larger step learns in 2 epochs
    nets, histories = fit_seeds(arch, config, [3, 4], bigger, 10)
    assert histories[0].epochs[-1]["val_acc"] > 0.5  # chance is 0.1
    assert histories[1].epochs[-1]["val_acc"] > 0.5
    assert histories[0].epochs[-1]["loss"] != histories[1].epochs[-1]["loss"]
    first = [dict(net.named_parameters())["body.0.conv.weight"] for net in nets]
    assert not torch.equal(first[0], first[1])


def test_other_optimizers_stay_per_seed(split) -> None:
    config = CONFIG.replace(epochs=1, optimizer="rmsprop")
    assert_same_training(tiny(), split, [5, 6], config)


def test_run_folders_resume_one_by_one(tmp_path: Path) -> None:
    """A batched study's run folder continues alone exactly like a one-seed run."""
    arch = tiny()
    config = CONFIG.replace(epochs=1, device="cpu")
    outs = [tmp_path / f"s{seed}" for seed in (7, 8)]
    results = train_seeds(arch, config, [7, 8], outs)
    for seed, out, result in zip((7, 8), outs, results, strict=True):
        record = open_run(out)
        assert record.status == "completed"
        assert record.config.seed == seed
        assert record.meta["test"]["acc"] == result.test_acc
        assert len(record.history()) == 1
    resumed = cnnlab.resume(outs[1], epochs=2)
    alone = cnnlab.train(arch, config.replace(seed=8, epochs=2), tmp_path / "alone")
    assert resumed.history.column("val_loss") == pytest.approx(
        alone.history.column("val_loss"), rel=METRIC_TOL
    )
    assert resumed.test_acc == pytest.approx(alone.test_acc, abs=0.01)


def test_bad_arguments_are_user_errors(tmp_path: Path, split) -> None:
    with pytest.raises(CnnlabError, match="at least one seed"):
        fit_seeds(tiny(), CONFIG, [], split, 10)
    with pytest.raises(CnnlabError, match="one folder per seed"):
        train_seeds(tiny(), CONFIG, [0, 1], [tmp_path / "a"])


def test_study_batch_seeds_matches_one_by_one(tmp_path: Path) -> None:
    """`cnnlab study --batch-seeds`: same store rows and run folders, then skips."""
    doc = {
        "name": "seeds",
        "seeds": [0, 1],
        "train": {"epochs": 1, "train_limit": 500, "val_size": 200, "test_limit": 200},
        "architectures": [{"label": "tiny", "spec": tiny().to_dict()}],
    }
    (tmp_path / "seeds.yaml").write_text(yaml.safe_dump(doc))

    def study(out: str, *flags: str) -> str:
        cmd = [sys.executable, "-m", "cnnlab", "study", "seeds.yaml", "--out", out]
        done = subprocess.run(
            [*cmd, "--workers", "1", *flags],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    study("batched", "--batch-seeds")
    study("alone")
    results = {}
    for out in ("batched", "alone"):
        with Store(tmp_path / out / "cnnlab.sqlite") as store:
            results[out] = sorted(store.trials("seeds"), key=lambda t: t.seed)
        files = sorted(p.name for p in (tmp_path / out / "seeds" / "runs").iterdir())
        assert files == ["tiny-s0", "tiny-s1"]
    for got, want in zip(results["batched"], results["alone"], strict=True):
        assert got.status == want.status == "completed"
        assert got.test_loss == pytest.approx(want.test_loss, rel=METRIC_TOL)
        assert got.column("val_loss") == pytest.approx(
            want.column("val_loss"), rel=METRIC_TOL
        )
    study("batched", "--batch-seeds")  # all complete: nothing is retrained
    with Store(tmp_path / "batched" / "cnnlab.sqlite") as store:
        again = sorted(store.trials("seeds"), key=lambda t: t.seed)
    assert [t.test_loss for t in again] == [t.test_loss for t in results["batched"]]
