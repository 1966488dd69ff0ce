"""One timing of one stack on one preset, run in a fresh process by `bench.py`.

    python benchmarks/stacks.py --stack keras3-tf --preset 2 --mode epochs --epochs 2
    python benchmarks/stacks.py --stack keras3-tf --preset 2 --precision bf16

prints one JSON line (stack, preset, mode, samples_per_s, epoch_seconds, ...).
Every stack trains the same architecture (built from cnnlab's preset) on the same
in-memory MNIST with batch 128, Adam (lr 1e-3) and cross-entropy; "epochs" mode times
the last of N whole epochs including the per-epoch evaluation on the 10,000 test
images, "steps" mode times steady-state training steps after a warm-up. --precision bf16
trains cnnlab in mixed bf16 (TrainConfig.precision: autocast, float32 weights) and
Keras under its `mixed_bfloat16` policy, the same scheme; fp16 (CUDA) likewise, with
a gradient scaler and Keras's `mixed_float16`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

BATCH = 128


def mnist(train_size: int) -> tuple[np.ndarray, ...]:
    """uint8 MNIST from cnnlab's embedded copy: (x_train, y_train, x_test, y_test)."""
    from cnnlab.data.datasets import load_dataset

    ds = load_dataset("mnist")
    return (
        ds.x_train[:train_size].numpy(),
        ds.y_train[:train_size].numpy(),
        ds.x_test.numpy(),
        ds.y_test.numpy(),
    )


# ----------------------------------------------------------------- cnnlab


def run_cnnlab(
    preset: str,
    mode: str,
    epochs: int,
    steps: int,
    size: int,
    eval_images: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict:
    import torch

    import cnnlab
    from cnnlab.data.datasets import Split, load_dataset
    from cnnlab.nn.model import build_model
    from cnnlab.training.config import TrainConfig
    from cnnlab.training.loop import as_input, fit, make_optimizer
    from cnnlab.training.precision import autocast, make_scaler
    from cnnlab.training.session import use_conv_path

    ds = load_dataset("mnist")
    model = build_model(cnnlab.load(preset), 10, seed=0)  # as `cnnlab train` does
    # ... with the wide-layer path `cnnlab train` would choose on this machine
    use_conv_path(model, torch.device(device), BATCH, precision=precision)
    if mode == "epochs":
        split = Split(ds.x_train[:size], ds.y_train[:size], ds.x_test, ds.y_test,
                      ds.x_test, ds.y_test, "test")  # fmt: skip
        config = TrainConfig(
            epochs=epochs, validation="test", device=device, precision=precision
        )
        history = fit(model, split, config)
        last = history.epochs[-1]  # validation is the test set here
        return {"epoch_seconds": last["seconds"], "samples": size,
                "test_acc": last["val_acc"]}  # fmt: skip
    model.to(device)
    optimizer = make_optimizer(TrainConfig(), model.parameters())
    scaler = make_scaler(precision, torch.device(device))  # fp16's; else a no-op
    x = ds.x_train[: BATCH * (steps + 2)].to(device)
    y = ds.y_train[: BATCH * (steps + 2)].to(device)

    def step(i: int) -> None:
        xb, yb = (
            as_input(x[i * BATCH : (i + 1) * BATCH]),
            y[i * BATCH : (i + 1) * BATCH],
        )
        with autocast(precision, torch.device(device)):
            logits = model(xb)
        loss = torch.nn.functional.cross_entropy(logits.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    timed = _time_steps(step, steps, device=device)
    if eval_images:
        from cnnlab.training.loop import evaluate

        xs, ys = ds.x_test[:eval_images], ds.y_test[:eval_images]
        evaluate(model, xs[:BATCH], ys[:BATCH], precision=precision)  # warm-up
        _sync(device)
        started = time.perf_counter()
        evaluate(model, xs, ys, precision=precision)
        timed["eval_seconds"] = time.perf_counter() - started
    return timed


def _sync(device: str) -> None:
    """Wait for the GPU's queued work, so the clock measures it (no-op on CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _time_steps(step: Any, steps: int, warmup: int = 2, device: str = "cpu") -> dict:
    for i in range(warmup):
        step(i)
    _sync(device)
    started = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    _sync(device)
    seconds = time.perf_counter() - started
    return {"samples_per_s": steps * BATCH / seconds, "step_seconds": seconds / steps}


# ------------------------------------------------------------- PyTorch


def idiomatic(model: Any) -> Any:
    """cnnlab's network as plain PyTorch code has it: NCHW weights, nn.Dropout.

    The same layers and maths, without cnnlab's speed choices (channels_last weights,
    dropout masks from rand_like, NNPACK's Winograd convolutions; the model must be
    built with reorder=False, which keeps each activation before its pool), so this
    stack measures what a user gets from a straightforward PyTorch loop.
    """
    import torch

    from cnnlab.nn.model import KerasConv2d, MaskDropout

    for i, layer in enumerate(model.body):
        if isinstance(layer, MaskDropout):
            model.body[i] = torch.nn.Dropout(layer.rate)
        if isinstance(layer, KerasConv2d):
            layer.winograd = False
    return model.to(memory_format=torch.contiguous_format)


def run_torch(
    preset: str,
    mode: str,
    epochs: int,
    steps: int,
    size: int,
    eval_images: int = 0,
    device: str = "cpu",
) -> dict:
    """Idiomatic PyTorch: TensorDataset + DataLoader(shuffle), NCHW, eval each epoch."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import cnnlab
    from cnnlab.nn.model import build_model

    x_train, y_train, x_test, y_test = mnist(size)

    def dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        xs = torch.from_numpy(x).float().div(255).unsqueeze(1)
        return TensorDataset(xs, torch.from_numpy(y).long())

    torch.manual_seed(0)
    model = idiomatic(build_model(cnnlab.load(preset), 10, seed=0, reorder=False))
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    train = DataLoader(dataset(x_train, y_train), batch_size=BATCH, shuffle=True)
    test = DataLoader(dataset(x_test, y_test), batch_size=BATCH)

    def train_step(xb: Any, yb: Any) -> None:
        xb, yb = xb.to(device), yb.to(device)
        loss = loss_fn(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    if mode == "steps":
        batches = list(train)

        def step(i: int) -> None:
            model.train()
            train_step(*batches[i])

        return _time_steps(step, steps, device=device)
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for xb, yb in train:
            train_step(xb, yb)
        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in test:
                correct += (model(xb.to(device)).argmax(1).cpu() == yb).sum().item()
        seconds = time.perf_counter() - started
    return {
        "epoch_seconds": seconds,
        "samples": size,
        "test_acc": correct / len(x_test),
    }


# --------------------------------------------------------------- Keras


def keras_model(keras: Any, preset: str) -> Any:
    """The preset as a Keras Sequential, layer for layer."""
    import cnnlab
    from cnnlab.nn.spec import layer_to_dict

    arch = cnnlab.load(preset)
    layers = [keras.Input(shape=arch.input_shape)]
    for layer in arch.layers:
        doc = layer_to_dict(layer)
        kind = doc.pop("type")
        for key, value in doc.items():
            if isinstance(value, list):
                doc[key] = tuple(value)
        layers.append(getattr(keras.layers, kind)(**doc))
    return keras.Sequential(layers)


def run_keras(
    legacy: bool,
    preset: str,
    mode: str,
    epochs: int,
    steps: int,
    size: int,
    eval_images: int = 0,
    precision: str = "fp32",
) -> dict:
    if legacy:
        import tf_keras as keras
    else:
        import keras
    import tensorflow as tf

    if precision != "fp32":  # before the model is built: its layers take the policy
        policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[precision]
        keras.mixed_precision.set_global_policy(policy)
    tf.random.set_seed(0)
    model = keras_model(keras, preset)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x_train, y_train, x_test, y_test = mnist(size)
    x_train = (x_train[..., None] / 255.0).astype("float32")
    x_test = (x_test[..., None] / 255.0).astype("float32")
    if mode == "steps":
        n = BATCH * (steps + 2)
        times: list[float] = []
        cb = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda b, logs: times.append(time.perf_counter())
        )
        model.fit(x_train[:n], y_train[:n], batch_size=BATCH, epochs=1, verbose=0,
                  shuffle=False, callbacks=[cb])  # fmt: skip
        seconds = times[-1] - times[1]  # steps after the 2 warm-up batches
        timed = {
            "samples_per_s": steps * BATCH / seconds,
            "step_seconds": seconds / steps,
        }
        if eval_images:  # as fit's per-epoch validation runs: evaluate, batch 128
            xs, ys = x_test[:eval_images], y_test[:eval_images]
            model.evaluate(xs[:BATCH], ys[:BATCH], batch_size=BATCH, verbose=0)
            started = time.perf_counter()
            model.evaluate(xs, ys, batch_size=BATCH, verbose=0)
            timed["eval_seconds"] = time.perf_counter() - started
        return timed
    ends: list[float] = []
    cb = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: ends.append(time.perf_counter())
    )
    started = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=BATCH, epochs=epochs, verbose=0,
                        validation_data=(x_test, y_test), callbacks=[cb])  # fmt: skip
    done = time.perf_counter()
    # The last epoch measured from the end of the one before: any stall at the
    # boundary (Keras 3 showed 30 s on preset 9) counts, as a user waits for it.
    seconds = done - (ends[-2] if len(ends) > 1 else started)
    acc = history.history.get("val_accuracy", [None])[-1]
    return {"epoch_seconds": seconds, "samples": size, "test_acc": acc}


STACKS = {
    "cnnlab": run_cnnlab,
    "torch-dataloader": run_torch,
    "keras3-tf": lambda *a, **k: run_keras(False, *a, **k),
    "tf-keras2": lambda *a, **k: run_keras(True, *a, **k),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stack", choices=STACKS, required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--mode", choices=("epochs", "steps"), default="epochs")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--train-size", type=int, default=60_000)
    p.add_argument(
        "--device",
        default="cpu",
        help="cnnlab and torch-dataloader: cpu or cuda (Keras picks its own device)",
    )
    p.add_argument(
        "--eval-images",
        type=int,
        default=0,
        help="steps mode: also time the evaluation of this many test images",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="cnnlab's --precision; Keras: mixed_bfloat16 / mixed_float16 policy",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    extra: dict[str, Any] = {"device": args.device} if args.device != "cpu" else {}
    if extra and args.stack.startswith(("keras", "tf-")):
        p.error(f"--device applies to cnnlab and torch-dataloader, not {args.stack}")
    if args.precision != "fp32":
        if args.stack == "torch-dataloader":
            p.error("--precision bf16 applies to cnnlab and the Keras stacks")
        extra["precision"] = args.precision
    result: dict[str, Any] = STACKS[args.stack](
        args.preset, args.mode, args.epochs, args.steps, args.train_size,
        args.eval_images, **extra,
    )  # fmt: skip
    if "epoch_seconds" in result:
        result["samples_per_s"] = result["samples"] / result["epoch_seconds"]
    result.update(
        stack=args.stack, preset=args.preset, mode=args.mode, precision=args.precision
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
