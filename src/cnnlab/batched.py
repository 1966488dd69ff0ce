"""Train several seeds of one architecture as one batched computation.

The idea: small nets such as preset 2 leave much of a step to fixed costs (Python,
kernel launches, tiny GEMMs), which K seeds stacked into one network would share.
Measured on the 2-core CPU it does not pay: oneDNN's grouped convolutions cost 6-8x a
single one, and 5 seeds of preset 2 batched took 7.9x one seed's time (one by one: 5x;
benchmarks/batched_seeds.py). So it stays opt-in (`cnnlab study --batch-seeds`). Seed k
owns slice k of every weight: convolutions become grouped convolutions (groups=K,
channels seed-major), batch norm runs over K x C channels (so per seed), Dense
layers become batched matrix products. The images a seed sees in slice k come from
its own shuffle generator, each seed's loss is its own mean cross-entropy and the
summed loss keeps the gradients independent; Adam, AdamW, RMSprop, SGD and Adadelta
update elementwise, so one optimizer over the stacked tensors is K optimizers.

Everything a seed draws matches `train.fit` with that seed: initial weights are
`build_model(arch, classes, seed)`'s, shuffling uses `Generator().manual_seed(seed)`,
and dropout masks come from a generator seeded as `fit` seeds the global RNG, drawn
with the same shapes, so a batched seed follows its one-by-one run up to float
rounding. Each seed comes back as an ordinary `Network` and `History`, and
`train_seeds` writes ordinary run folders, so a killed batched run resumes one by
one from its per-seed checkpoints.

Layouts inside the stack: images are (N, K*C, H, W), channels_last in memory like
`train.as_input`; after Flatten, features are (K, N, F).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import api
from cnnlab.config import TrainConfig
from cnnlab.data import Split
from cnnlab.errors import CnnlabError
from cnnlab.model import (
    KerasConv2d,
    KerasDense,
    KerasFlatten,
    KerasPool2d,
    MaskDropout,
    Network,
    build_model,
)
from cnnlab.plots import plot_history
from cnnlab.runs import CURVES_FILE, RunRecord, create_run, environment
from cnnlab.spec import Architecture
from cnnlab.train import (
    PROGRESS_EVERY,
    EpochPlan,
    History,
    TrainingDiverged,
    TrainState,
    _check_epoch,
    _diverged,
    epoch_plan,
    evaluate,
    make_optimizer,
    pick_device,
)

# ---------------------------------------------------------------- stacked layers


class _StackedConv(nn.Module):
    """K `KerasConv2d` as one grouped convolution; keeps their padding rules."""

    forward = KerasConv2d.forward  # the same asymmetric-'same' handling

    def __init__(self, source: KerasConv2d, k: int) -> None:
        super().__init__()
        conv = source.conv
        self.pad = source.pad
        self.winograd = False  # NNPACK has no grouped convolutions
        self.conv = nn.utils.skip_init(
            nn.Conv2d,
            k * conv.in_channels,
            k * conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            bias=conv.bias is not None,
            groups=k,
        )


class _StackedLinear(nn.Module):
    """K Linear layers: weight (K, out, in), bias (K, out)."""

    def __init__(self, source: nn.Linear, k: int) -> None:
        super().__init__()
        shape = (k, source.out_features, source.in_features)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = None
        if source.bias is not None:
            self.bias = nn.Parameter(torch.empty(k, source.out_features))


class _StackedDense(nn.Module):
    """K `KerasDense`: batched matmul on features, grouped 1x1 conv on images."""

    def __init__(self, source: KerasDense, k: int) -> None:
        super().__init__()
        self.k = k
        self.linear = _StackedLinear(source.linear, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.linear.weight, self.linear.bias
        if x.dim() == 4:  # Keras's Dense on an image: per position, over channels
            k, units, fan_in = w.shape
            kernel = w.reshape(k * units, fan_in, 1, 1)
            return F.conv2d(x, kernel, None if b is None else b.flatten(), groups=k)
        if b is None:
            return torch.bmm(x, w.transpose(1, 2))
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


class _StackedFlatten(nn.Module):
    """`KerasFlatten` per seed: (N, K*C, H, W) -> (K, N, H*W*C), Keras's order."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return x  # already (K, N, F): flattening a vector changes nothing
        n, kc, h, w = x.shape
        seeds = x.view(n, self.k, kc // self.k, h, w)
        return seeds.permute(1, 0, 3, 4, 2).reshape(self.k, n, -1)


class _StackedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over K*F features of (K, N, F) input: statistics per seed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, n, f = x.shape
        y = super().forward(x.transpose(0, 1).reshape(n, k * f))
        return y.view(n, k, f).transpose(0, 1)


class _StackedSoftmax(nn.Module):
    """A softmax inside the net (the last one is in the loss): over each seed's C."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            n, kc, h, w = x.shape
            return x.view(n, self.k, kc // self.k, h, w).softmax(2).view_as(x)
        return x.softmax(-1)


class _StackedDropout(nn.Module):
    """Dropout with one mask per seed, drawn from that seed's own generator.

    Each mask is drawn as the one-seed module draws it (same shape, memory format
    and call: `MaskDropout`'s uniform draw, or `nn.Dropout`'s Bernoulli one), so
    seed k's masks equal those of `train.fit` with seed k, whose only use of the
    global RNG is dropout.
    """

    def __init__(
        self,
        source: nn.Module,
        generators: Sequence[torch.Generator],
        memory_format: torch.memory_format,
    ) -> None:
        super().__init__()
        self.uniform = isinstance(source, MaskDropout)
        self.rate = source.rate if self.uniform else source.p
        self.generators = generators
        self.memory_format = memory_format

    def _draw(self, shape: torch.Size, device: torch.device, k: int) -> torch.Tensor:
        """Seed k's mask of one-seed `shape`: kept cells scaled, as float."""
        last = len(shape) == 4 and self.memory_format == torch.channels_last
        fmt = torch.channels_last if last else torch.contiguous_format
        cells = torch.empty(shape, device=device, memory_format=fmt)
        gen = self.generators[k]
        if self.uniform:  # MaskDropout: rand_like(x) >= rate, then * 1 / (1 - rate)
            keep = cells.uniform_(0.0, 1.0, generator=gen) >= self.rate
            return keep * (1.0 / (1.0 - self.rate))
        # nn.Dropout: a Bernoulli(1 - rate) draw divided by 1 - rate
        return cells.bernoulli_(1.0 - self.rate, generator=gen).div_(1.0 - self.rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0 or x.numel() == 0:
            return x
        k = len(self.generators)
        if x.dim() == 4:
            n, kc, h, w = x.shape
            mask = torch.empty_like(x)
            slices = mask.view(n, k, kc // k, h, w)
            for i in range(k):
                slices[:, i].copy_(
                    self._draw(torch.Size((n, kc // k, h, w)), x.device, i)
                )
        else:
            mask = torch.stack([self._draw(x.shape[1:], x.device, i) for i in range(k)])
        return x * mask


def _stack_module(
    module: nn.Module,
    k: int,
    generators: Sequence[torch.Generator],
    formats: dict[int, torch.memory_format],
) -> nn.Module:
    """The stacked counterpart of one module of `Network.body`."""
    if isinstance(module, KerasConv2d):
        return _StackedConv(module, k)
    if isinstance(module, KerasDense):
        return _StackedDense(module, k)
    if isinstance(module, KerasFlatten):
        return _StackedFlatten(k)
    if isinstance(module, nn.BatchNorm2d):
        c = module.num_features
        return nn.BatchNorm2d(k * c, eps=module.eps, momentum=module.momentum)
    if isinstance(module, nn.BatchNorm1d):
        f = module.num_features
        return _StackedBatchNorm1d(k * f, eps=module.eps, momentum=module.momentum)
    if isinstance(module, nn.Dropout | MaskDropout):
        return _StackedDropout(module, generators, formats[id(module)])
    if isinstance(module, nn.Softmax):
        return _StackedSoftmax(k)
    if isinstance(module, KerasPool2d | nn.ReLU | nn.Sigmoid | nn.Tanh):
        return copy.deepcopy(module)  # per channel or elementwise: one serves all
    if isinstance(module, nn.ELU | nn.GELU | nn.LeakyReLU):
        return copy.deepcopy(module)
    raise AssertionError(f"no stacked form for {module!r}")


def _dropout_formats(net: Network) -> dict[int, torch.memory_format]:
    """The memory format of each Dropout's input when `net` trains on its own.

    A one-channel input is both NCHW- and NHWC-contiguous, and convolutions then
    choose NCHW; the format decides how a Bernoulli draw maps onto elements, so
    matching one-seed masks needs it. Found by one eval-mode forward of two blank
    images (eval: no statistics change, no random draws).
    """
    formats: dict[int, torch.memory_format] = {}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]
        nhwc = x.dim() == 4 and not x.is_contiguous()
        nhwc = nhwc and x.is_contiguous(memory_format=torch.channels_last)
        formats[id(module)] = torch.channels_last if nhwc else torch.contiguous_format

    height, width, channels = net.arch.input_shape
    device = next(net.parameters()).device
    probe = torch.zeros(2, channels, height, width, device=device)
    hooks = [
        m.register_forward_pre_hook(record)
        for m in net.body
        if isinstance(m, nn.Dropout | MaskDropout)
    ]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(probe.contiguous(memory_format=torch.channels_last))
    finally:
        net.train(was_training)
        for hook in hooks:
            hook.remove()
    return formats


class StackedNetwork(nn.Module):
    """K copies of one architecture in one module; `forward` gives (K, N, classes).

    Its state-dict keys are a `Network`'s, each tensor K per-seed tensors stacked
    along the first axis (0-d counters are shared), so `stack_from` and `unstack_to`
    are reshapes.
    """

    def __init__(
        self, nets: Sequence[Network], generators: Sequence[torch.Generator]
    ) -> None:
        super().__init__()
        self.k = len(nets)
        self.shapes = {key: t.shape for key, t in nets[0].state_dict().items()}
        formats = _dropout_formats(nets[0])
        body = [_stack_module(m, self.k, generators, formats) for m in nets[0].body]
        self.body = nn.Sequential(*body)
        self.stack_from(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    @torch.no_grad()
    def stack_from(self, nets: Sequence[Network]) -> None:
        states = [net.state_dict() for net in nets]
        own = self.state_dict()
        for key, target in own.items():
            if target.dim() == 0:
                target.copy_(states[0][key])
            else:
                parts = torch.stack([s[key] for s in states])
                target.copy_(parts.reshape(target.shape))

    @torch.no_grad()
    def unstack_to(self, nets: Sequence[Network]) -> None:
        for key, stacked in self.state_dict().items():
            for i, net in enumerate(nets):
                target = net.state_dict()[key]
                if stacked.dim() == 0:
                    target.copy_(stacked)
                else:
                    target.copy_(stacked.reshape(self.k, *self.shapes[key])[i])


def _split_optimizer(
    state: dict[str, Any], shapes: Sequence[torch.Size], k: int, i: int
) -> dict[str, Any]:
    """Seed i's share of a stacked optimizer's state_dict: same keys, sliced.

    `shapes[j]` is one seed's shape of parameter j; per-weight buffers (moments,
    averages) hold K of them, 0-d ones such as Adam's step count are shared.
    """
    per_seed: dict[int, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        shape = shapes[index]
        per_seed[index] = {
            name: value.reshape(k, *shape)[i].clone()
            if torch.is_tensor(value) and value.dim() > 0
            else copy.deepcopy(value)
            for name, value in slots.items()
        }
    return {"state": per_seed, "param_groups": copy.deepcopy(state["param_groups"])}


# ---------------------------------------------------------------- training


def _stacked_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (K, n, H, W) -> (n, K, H, W) float in [0, 1].

    Slice k equals `train.as_input(images[k])`; channels_last in memory likewise.
    """
    xb = images.transpose(0, 1).float().div_(255.0)
    return xb.contiguous(memory_format=torch.channels_last)


@dataclass
class SeedEpoch:
    """What `fit_seeds` hands its per-epoch callback for one seed."""

    index: int  # position in `seeds`
    model: Network  # that seed's weights after the epoch
    state: TrainState  # what `train.fit` would checkpoint


class SeedDiverged(TrainingDiverged):
    """One seed's loss or weights became NaN or infinite; `index` says which."""

    def __init__(self, message: str, epoch: int, step: int, index: int) -> None:
        super().__init__(message, epoch, step)
        self.index = index


def _train_epoch(
    stack: StackedNetwork,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    shuffles: Sequence[torch.Generator],
    plans: Sequence[EpochPlan],
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, float] | None]:
    """One epoch of all seeds; per-seed running (loss, acc) and the first NaN.

    `plans[k]` is seed k's `train.epoch_plan`: the learning rate and label
    smoothing are the same for every seed, shifts come from each seed's own
    generator. The NaN report is (seed index, step, value), checked every
    PROGRESS_EVERY steps as `train.train_epoch` does.
    """
    stack.train()
    k = stack.k
    orders = torch.stack([torch.randperm(len(x), generator=g) for g in shuffles])
    orders = orders.to(x.device)
    steps = -(-len(x) // batch_size)
    losses = torch.empty(steps, k, device=x.device)
    loss_sum = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.long)
    seen = checked = 0
    for step, start in enumerate(range(0, len(x), batch_size), start=1):
        idx = orders[:, start : start + batch_size]
        plans[0].start_step(optimizer, step)  # the schedule is seed-independent
        images = torch.stack([p.images(x[i]) for p, i in zip(plans, idx, strict=True)])
        xb, yb = _stacked_input(images), y[idx]
        logits = stack(xb)  # (K, n, classes)
        per_sample = F.cross_entropy(
            logits.flatten(0, 1),
            yb.flatten(),
            reduction="none",
            label_smoothing=plans[0].label_smoothing,
        )
        loss = per_sample.view(k, -1).mean(1)  # each seed's own mean
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # seeds share no weights: gradients stay separate
        optimizer.step()
        n = idx.shape[1]
        losses[step - 1] = loss.detach()
        loss_sum += loss.detach() * n
        correct += (logits.detach().argmax(2) == yb).sum(1)
        seen += n
        if step % PROGRESS_EVERY == 0 or step == steps:
            bad = _first_non_finite(losses, checked, step)
            if bad is not None:
                return loss_sum / seen, correct / seen, bad
            checked = step
    return loss_sum / seen, correct / seen, None


def _first_non_finite(
    losses: torch.Tensor, done: int, step: int
) -> tuple[int, int, float] | None:
    window = losses[done:step]
    bad = ~torch.isfinite(window)
    if not bad.any():
        return None
    row, seed = (int(v) for v in bad.nonzero()[0])
    return seed, done + row + 1, float(window[row, seed])


def fit_seeds(
    arch: Architecture,
    config: TrainConfig,
    seeds: Sequence[int],
    split: Split,
    num_classes: int | None = None,
    on_epoch_end: Callable[[SeedEpoch], None] | None = None,
) -> tuple[list[Network], list[History]]:
    """Train `arch` once per seed, all seeds in one stacked network.

    Seed k trains as `train.fit(build_model(arch, classes, seeds[k]), split,
    config.replace(seed=seeds[k]))` would (`config.seed` is ignored). History rows
    record the stacked epoch's wall time divided by K as `seconds`, so summing
    them over seeds gives the time spent. Raises SeedDiverged when a seed's loss or
    weights stop being finite; every seed keeps its last finished epoch.
    """
    if not seeds:
        raise CnnlabError("fit_seeds needs at least one seed. Pass seeds=[0, 1, 2].")
    device = pick_device(config.device)
    configs = [config.replace(seed=s) for s in seeds]
    nets = [build_model(arch, num_classes, seed=s).to(device) for s in seeds]
    shuffles = [torch.Generator().manual_seed(s) for s in seeds]
    droppers = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    stack = StackedNetwork(nets, droppers).to(device)
    names = [name for name, _ in stack.named_parameters()]
    shapes = [stack.shapes[name] for name in names]  # one seed's, per parameter
    optimizer = make_optimizer(config, stack.parameters())
    x, y = split.x_train.to(device), split.y_train.to(device)
    steps = -(-len(x) // config.batch_size)
    histories = [History() for _ in seeds]
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        plans = [epoch_plan(c, epoch, steps) for c in configs]
        loss, acc, bad = _train_epoch(
            stack, optimizer, x, y, config.batch_size, shuffles, plans
        )
        if bad is not None:
            index, step, value = bad
            raise _seed_diverged(configs[index], epoch, step, steps, value, index)
        stack.unstack_to(nets)
        rows = _epoch_rows(nets, split, configs, epoch, loss, acc, steps)
        seconds = (time.perf_counter() - started) / len(seeds)
        opt_state = optimizer.state_dict()
        for i, row in enumerate(rows):
            row["seconds"] = seconds
            histories[i].epochs.append(row)
            if on_epoch_end is not None:
                state = TrainState(
                    epoch=epoch,
                    history=History([dict(r) for r in histories[i].epochs]),
                    optimizer=_split_optimizer(opt_state, shapes, len(seeds), i),
                    shuffle_rng=shuffles[i].get_state(),
                    torch_rng=_torch_rng(droppers[i]),
                )
                on_epoch_end(SeedEpoch(i, nets[i], state))
    return nets, histories


def _epoch_rows(
    nets: Sequence[Network],
    split: Split,
    configs: Sequence[TrainConfig],
    epoch: int,
    loss: torch.Tensor,
    acc: torch.Tensor,
    steps: int,
) -> list[dict[str, Any]]:
    """Each seed's history row; checked finite before anything is checkpointed."""
    rows = []
    for i, net in enumerate(nets):
        row: dict[str, Any] = {"epoch": epoch, "loss": float(loss[i])}
        row["acc"] = float(acc[i])
        row["val_loss"], row["val_acc"] = None, None
        if split.x_val is not None:
            row["val_loss"], row["val_acc"] = evaluate(net, split.x_val, split.y_val)
        try:
            _check_epoch(net, row, configs[i], steps)
        except TrainingDiverged as err:
            raise SeedDiverged(str(err), err.epoch, err.step, i) from None
        rows.append(row)
    return rows


def _torch_rng(generator: torch.Generator) -> torch.Tensor:
    """The RNG state a one-seed resume restores with torch.set_rng_state.

    On the CPU that is the seed's dropout generator, so a resumed run draws the
    masks the batched run would have; CUDA's global state has another form.
    """
    if generator.device.type == "cpu":
        return generator.get_state()
    return torch.get_rng_state()


def _seed_diverged(
    config: TrainConfig, epoch: int, step: int, steps: int, value: float, index: int
) -> SeedDiverged:
    err = _diverged(config, epoch, step, steps, value)
    message = f"seed {config.seed}: {err}"
    return SeedDiverged(message, err.epoch, err.step, index)


# ---------------------------------------------------------------- run folders


def _environment(device: torch.device, dataset: Any, split: Split) -> dict[str, Any]:
    """run.json's environment, as `api.train` records it."""
    return environment(device) | {
        "data_source": dataset.source,
        "class_names": list(dataset.class_names),
        "train_samples": len(split.x_train),
        "val_samples": 0 if split.x_val is None else len(split.x_val),
        "test_samples": len(split.x_test),
    }


def train_seeds(
    arch: Architecture,
    config: TrainConfig,
    seeds: Sequence[int],
    outs: Sequence[str | Path],
    overwrite: bool = False,
    on_epoch: Callable[[int, TrainState], None] | None = None,
    clean_train: bool = False,
) -> list[api.RunResult]:
    """`api.train` for several seeds at once: one ordinary run folder per seed.

    Seed k's folder (outs[k]) gets the checkpoint, history, curves, weights and
    test metrics a one-seed run writes, its config saying seed k, so `cnnlab train
    --resume` continues any of them alone. `on_epoch(k, state)` follows seed k's
    checkpoint. If a seed diverges its run is marked failed and the others
    interrupted (each resumable from its last epoch); SeedDiverged is raised.
    """
    if len(outs) != len(seeds):
        raise CnnlabError(
            f"train_seeds got {len(seeds)} seeds but {len(outs)} output folders. "
            "Give one folder per seed."
        )
    device, dataset, split = api._prepare(config)
    # K stacked nets hold about what one net holds at K times the batch.
    wide = config.replace(batch_size=config.batch_size * max(len(seeds), 1))
    api._check_fits(arch, dataset, split, wide, device)
    env = _environment(device, dataset, split)
    records: list[RunRecord] = []
    for seed, out in zip(seeds, outs, strict=True):
        seed_config = config.replace(seed=seed)
        records.append(create_run(Path(out), arch, seed_config, env, overwrite))

    def checkpoint(done: SeedEpoch) -> None:
        record = records[done.index]
        record.save_checkpoint(done.model, done.state)
        history = done.state.history.as_dict()
        plot_history(history, record.path / CURVES_FILE, title=record.meta["name"])
        if on_epoch is not None:
            on_epoch(done.index, done.state)

    try:
        nets, histories = fit_seeds(
            arch, config, seeds, split, dataset.num_classes, checkpoint
        )
        return [
            _finish(record, net, history, split, clean_train)
            for record, net, history in zip(records, nets, histories, strict=True)
        ]
    except SeedDiverged as err:
        for i, record in enumerate(records):
            if i == err.index:
                api._mark(record, "failed", error=str(err))
            else:
                api._mark(record, "interrupted")
        raise
    except BaseException:  # Ctrl-C, a full disk: every last checkpoint stays
        for record in records:
            if record.meta.get("status") == "running":
                api._mark(record, "interrupted")
        raise


def _finish(
    record: RunRecord,
    net: Network,
    history: History,
    split: Split,
    clean_train: bool,
) -> api.RunResult:
    """Score one seed's final weights and complete its run folder."""
    test_loss, test_acc = evaluate(net, split.x_test, split.y_test)
    clean = evaluate(net, split.x_train, split.y_train) if clean_train else None
    record.save_weights(net)
    record.save_meta(
        status="completed",
        test={"loss": test_loss, "acc": test_acc},
        train_clean=None if clean is None else {"loss": clean[0], "acc": clean[1]},
    )
    return api.RunResult(record.path, net, history, test_loss, test_acc, clean)
