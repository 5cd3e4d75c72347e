"""The training engine: ``train(config, data, model) -> TrainResult``.

One short loop: the built-in trainer, on the same run API a user's own trainer gets
(``search/training/run.py``: its timed region, its reports). Everything (model,
optimizer, schedule, loss, batch transform, precision) is built before the loop from the
config's building blocks, the ones a user's loop imports; the loop only steps. See
``search/training/timing.py`` for what the seconds include.
"""

from __future__ import annotations

import gc
import math

import torch

from search.errors import UserError
from search.training import models, timing
from search.training.config import TrainConfig
from search.training.data import Data, DataSpec
from search.training.data import load as load_data
from search.training.models import ModelSpec
from search.training.run import ENDINGS, Decide, Run, TrainResult, ended, on_device, result_of
from search.training.trick import Context

# A training loss this many times chance level (ln C) counts as divergence: with BatchNorm a
# huge lr can blow the loss up by orders of magnitude and still stay finite.
DIVERGED_LOSS_FACTOR = 1000.0


def train(config: TrainConfig, data: Data | DataSpec | str = "digits",
          model: ModelSpec | str = "cnn", *, device: str | torch.device = "auto",
          callback: Decide | None = None, warm: bool = True) -> TrainResult:
    """Train ``model`` on ``data`` with ``config``; never raises for divergence or OOM.

    ``callback`` is called after every epoch with (epoch, val_accuracy, val_loss,
    train_seconds so far); returning a reason (a string or True) stops the run as
    ``pruned``. ``warm`` pays the process's one-time start-up costs first, untimed.
    """
    dev = timing.resolve_device(device)
    spec = ModelSpec(model) if isinstance(model, str) else model
    if not isinstance(data, Data):
        data = load_data(DataSpec(data) if isinstance(data, str) else data)
    models.check_inputs(spec, data.images, data.shape)
    data = data.to(dev, models.input_channels(spec, data.channels))
    if config.batch_size > data.train_size:
        raise UserError(f"batch_size: larger than the training set ({data.train_size}), "
                        f"got {config.batch_size}")
    if warm:
        timing.warm_up(dev, config)
    torch.manual_seed(config.seed)
    net = models.build(spec, in_channels=data.channels, num_classes=data.num_classes,
                       **config.model_kwargs())
    config.check(context(spec, data, net))
    config.prepare(net)
    try:
        with on_device(config, dev):
            return _run(config, data, net.to(dev), dev, callback)
    finally:
        del net
        if dev.type == "cuda":  # free the device memory for the next trial now
            gc.collect()  # a full collection: about 0.45 s with a study loaded, so GPU only
            torch.cuda.empty_cache()


def context(spec: ModelSpec, data: Data, net: torch.nn.Module | None = None) -> Context:
    """What a config is checked against: this model (built, when ``net`` is given) and data."""
    return Context(pretrained=bool(spec.weights),
                   blocks=len(models.blocks_of(net)) if net is not None else None,
                   model_kwargs=models.accepted_kwargs(spec), images=data.images,
                   flip_invariant=data.spec.flip_invariant)


def _run(config: TrainConfig, data: Data, net: torch.nn.Module, dev: torch.device,
         callback: Decide | None) -> TrainResult:
    steps = data.steps_per_epoch(config.batch_size)
    optimizer = config.build_optimizer(net)
    scheduler = config.build_scheduler(optimizer, steps)
    criterion = config.build_criterion()
    batch = config.build_batch(data.num_classes)
    scaler, autocast = config.grad_scaler(dev), config.autocast(dev)  # reused every step
    before_step = config.build_before_step(optimizer, scaler)  # gradient clipping, or None
    generator = torch.Generator().manual_seed(config.seed)
    divergence = Divergence(dev, DIVERGED_LOSS_FACTOR * math.log(max(2, data.num_classes)))

    run, eval_clock = Run(config, dev, decide=callback), timing.Stopwatch(dev)
    outcome, reason, samples, flops = "completed", "", 0, 0.0
    test_acc, step_net, best_state = None, net, None
    try:
        # Counting FLOPs runs the first batch (untimed) in the run's precision and layout,
        # so its kernels are warm for the timed loop: a batch too big fails here first.
        x0, y0 = next(data.train_batches(config.batch_size, torch.Generator().manual_seed(0)))
        with autocast:
            flops = timing.flops_per_sample(net, config.inputs(x0), y0, criterion)
        del x0, y0
        step_net = config.step_model(net)
        for epoch in range(1, config.train_epochs + 1):
            net.train()
            with run.timed():
                for x, y in data.train_batches(config.batch_size, generator):
                    x, target = batch(x, y)
                    for xs, ts, share in config.split(x, target):  # one, unless accumulating
                        with autocast:
                            loss = criterion(step_net(xs), ts)
                        scaler.scale(loss * share if share != 1.0 else loss).backward()
                    if before_step:
                        before_step()
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    samples += len(x)
                    if divergence.seen(loss):  # never waits for the device
                        break
            if divergence.confirmed():  # the clock synchronized: reading costs nothing
                outcome = "diverged"
                reason = (f"training loss non-finite or above {divergence.limit:.0f} "
                          f"(1000 x chance) in epoch {epoch}")
                break
            with eval_clock:
                acc, val_loss = evaluate(step_net, data, config, dev)
            best = run.best()
            if "test" in data.splits and math.isfinite(val_loss) and (
                    best < 0 or acc > run.curve[best]["accuracy"]):
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            run.report(acc, epoch, loss=val_loss)  # the study decides: Stop ends the run
            if early := config.stop(run.curve):
                outcome, reason = "early-stopped", early
                break
    except ENDINGS as e:  # stopped, diverged, out of memory: what the step held is
        outcome, reason = ended(e)  # released with this frame; train() empties the cache
    if best_state is not None and outcome != "oom":  # untimed, once: the reported point's
        net.load_state_dict(best_state)
        test_acc = evaluate(step_net, data, config, dev, "test")[0]
    return result_of(run, outcome, reason, test=test_acc, eval_seconds=eval_clock.seconds,
                     samples=samples, flops=flops, tricks=config.records())


class Divergence:
    """Watches the training loss for divergence (non-finite, or above ``limit``) without
    a host-device sync per step, which a user's loop would not have.

    A flag accumulates on the device. On a GPU the host reads a copy of it in pinned
    memory, refreshed by a non-blocking copy whenever the previous copy has landed (a
    CUDA event says so), so a diverged run stops a few steps late instead of every step
    waiting for the GPU; ``confirmed`` reads the flag itself once the device is idle. On
    the CPU there is no device to wait for: the flag is read directly, every step.
    """

    def __init__(self, device: torch.device, limit: float) -> None:
        self.limit = limit
        self.ok = torch.ones((), dtype=torch.bool, device=device)
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.host = torch.ones((), dtype=torch.bool).pin_memory()
            self.landed = torch.cuda.Event()  # an event never recorded counts as done

    def seen(self, loss: torch.Tensor) -> bool:
        """Fold one step's loss into the flag; whether divergence is seen yet (no sync)."""
        self.ok &= loss.detach() < self.limit  # False for nan and inf too
        if not self.cuda:
            return not bool(self.ok)
        if not self.landed.query():
            return False
        if not bool(self.host):
            return True
        self.host.copy_(self.ok, non_blocking=True)
        self.landed.record()
        return False

    def confirmed(self) -> bool:
        """Whether the run diverged (reads the device flag: call when the device is idle)."""
        return not bool(self.ok)


# Evaluation batch size by device type: on the CPU 256 evaluates the default study's
# validation split in 12 ms against 21 ms at 1,024 (activations that stay in cache); a
# GPU is filled by the larger batch.
EVAL_BATCH = {"cpu": 256}


@torch.no_grad()
def evaluate(net: torch.nn.Module, data: Data, config: TrainConfig, dev: torch.device,
             split: str = "val") -> tuple[float, float]:
    """Accuracy and mean loss (plain cross-entropy) on ``split``, in the run's precision."""
    net.eval()
    correct, loss_sum = torch.zeros((), device=dev), torch.zeros((), device=dev)
    for x, y in data.eval_batches(split, EVAL_BATCH.get(dev.type, 1024)):
        with config.autocast(dev):
            logits = net(config.inputs(x))
        loss_sum += torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    n = data.size(split)
    return correct.item() / n, loss_sum.item() / n  # one sync per evaluation


