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
import os

import torch

from search.errors import UserError
from search.training import models, parallel, timing
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
          callback: Decide | None = None, warm: bool = True,
          devices: list[torch.device] | None = None) -> TrainResult:
    """Train ``model`` on ``data`` with ``config``; never raises for divergence or OOM.

    ``callback`` is called after every epoch with (epoch, val_accuracy, val_loss,
    train_seconds so far); returning a reason (a string or True) stops the run as
    ``pruned``. ``warm`` pays the process's one-time start-up costs first, untimed.
    ``devices``: those a data-parallel run may use, one per process (default: the CPU
    for every process, or the first GPUs).
    """
    dev = timing.resolve_device(device)
    spec = ModelSpec(model) if isinstance(model, str) else model
    if not isinstance(data, Data):
        data = load_data(DataSpec(data) if isinstance(data, str) else data)
    devices = devices or default_devices(dev)
    if warm:
        timing.warm_up(dev, config)
    data, net = _model_and_data(config, data, spec, dev, devices)
    try:
        with on_device(config, dev):
            return _run(config, data, net, dev, callback, spec=spec, devices=devices)
    finally:
        del net
        if dev.type == "cuda":  # free the device memory for the next trial now
            gc.collect()  # a full collection: about 0.45 s with a study loaded, so GPU only
            torch.cuda.empty_cache()


def default_devices(dev: torch.device) -> list[torch.device]:
    """What one worker may spread a run over: its CPU cores (one process each at most),
    or every GPU of the machine, ``dev`` first (the lead's)."""
    if dev.type == "cuda":
        gpus = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        own = torch.device("cuda", dev.index if dev.index is not None else 0)
        return [own, *(g for g in gpus if g != own)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [dev] * (cores or 1)


def _model_and_data(config: TrainConfig, data: Data, spec: ModelSpec, dev: torch.device,
                    devices: list[torch.device]) -> tuple[Data, torch.nn.Module]:
    """The data on ``dev`` and the model built and prepared by the config (checked
    against both): the same in every process of a data-parallel run."""
    models.check_inputs(spec, data.images, data.shape)
    data = data.to(dev, models.input_channels(spec, data.channels))
    if config.batch_size > data.train_size:
        raise UserError(f"batch_size: larger than the training set ({data.train_size}), "
                        f"got {config.batch_size}")
    torch.manual_seed(config.seed)
    net = models.build(spec, in_channels=data.channels, num_classes=data.num_classes,
                       **config.model_kwargs())
    config.check(context(spec, data, net, devices=len(devices)))
    config.prepare(net)
    return data, net.to(dev)


def context(spec: ModelSpec, data: Data, net: torch.nn.Module | None = None, *,
            devices: int | None = None) -> Context:
    """What a config is checked against: this model (built, when ``net`` is given), data
    and the devices a run may spread over."""
    return Context(pretrained=bool(spec.weights),
                   blocks=len(models.blocks_of(net)) if net is not None else None,
                   model_kwargs=models.accepted_kwargs(spec), images=data.images,
                   flip_invariant=data.spec.flip_invariant, devices=devices)


def _follow(team: parallel.Team, dev: torch.device, config: TrainConfig, data: DataSpec,
            spec: ModelSpec) -> None:
    """A data-parallel rank other than 0: its own data and model, the same loop."""
    loaded, net = _model_and_data(config, load_data(data), spec, dev, [dev] * team.world)
    with on_device(config, dev):
        _run(config, loaded, net, dev, None, team=team)


def _run(config: TrainConfig, data: Data, net: torch.nn.Module, dev: torch.device,
         callback: Decide | None, *, team: parallel.Team | None = None,
         spec: ModelSpec | None = None, devices: list[torch.device] | None = None
         ) -> TrainResult | None:
    """The loop, in a one-process run or in each process of a data-parallel one (the lead,
    rank 0, starts the others: ``team`` None; a follower gets its team and returns None)."""
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
    lead, team = team is None, team or parallel.SOLO
    threads = torch.get_num_threads()
    try:
        # Counting FLOPs runs the first batch (untimed) in the run's precision and layout,
        # so its kernels are warm for the timed loop: a batch too big fails here first.
        x0, y0 = next(data.train_batches(config.batch_size, torch.Generator().manual_seed(0)))
        with autocast:
            flops = timing.flops_per_sample(net, config.inputs(x0), y0, criterion)
        del x0, y0
        if lead and config.data_parallel > 1:
            with run.timed():  # process start and the first all-reduce: a user pays them
                team = parallel.start(config.data_parallel, devices or [dev], _follow,
                                      (config, data.spec, spec))
                step_net = team.wrap(config.step_model(net), dev)
        else:  # DDP around the compiled model: DDP's own hooks stay out of the graph
            step_net = team.wrap(config.step_model(net), dev)
        eval_net = step_net if team.world == 1 else net  # not DDP's wrapper: no collectives
        if team.world > 1:
            torch.manual_seed(config.seed + team.rank)  # each rank mixes its own batches
        for epoch in range(1, config.train_epochs + 1):
            net.train()
            with run.timed():
                for x, y in data.train_batches(config.batch_size, generator):
                    samples += len(x)  # every rank's share: the global batch
                    x, target = batch(*team.shard(x, y))
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
                    # Never waits for the device; ranks stop together, at the epoch's end.
                    if divergence.seen(loss) and team.world == 1:
                        break
                team.barrier()  # the epoch ends with the slowest rank
            verdict = _diverged(divergence, epoch) if team.lead else None
            if team.lead and verdict is None:  # the lead evaluates, once, and the study decides
                with eval_clock:
                    acc, val_loss = evaluate(eval_net, data, config, dev)
                best = run.best()
                if "test" in data.splits and math.isfinite(val_loss) and (
                        best < 0 or acc > run.curve[best]["accuracy"]):
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                verdict = _reported(run, epoch, acc, val_loss)
            verdict = team.agree(verdict)  # the lead's word, in every rank
            if verdict:
                outcome, reason = verdict
                break
    except ENDINGS as e:  # stopped, diverged, out of memory: what the step held is
        if not lead:  # released with this frame; train() empties the cache
            raise  # a follower's end goes to its lead, who records it (parallel._child)
        outcome, reason = ended(e)
    except Exception as e:  # a data-parallel rank failed: the lead says which and how
        why = team.failure() if team.lead and team.world > 1 else None
        if why is None:
            raise
        if "out of memory" not in why:
            raise RuntimeError(f"a data-parallel process failed: {why}") from e
        outcome, reason = "oom", why
    finally:
        if lead and team.world > 1:
            team.close()
        torch.set_num_threads(threads)
    if not lead:
        return None
    if best_state is not None and outcome != "oom":  # untimed, once: the reported point's
        net.load_state_dict(best_state)
        test_acc = evaluate(eval_net, data, config, dev, "test")[0]
    return result_of(run, outcome, reason, test=test_acc, eval_seconds=eval_clock.seconds,
                     samples=samples, flops=flops, tricks=config.records())


def _diverged(divergence: Divergence, epoch: int) -> tuple[str, str] | None:
    """After an epoch, on the lead: the run's end if its training loss diverged (then it
    is not evaluated)."""
    if not divergence.confirmed():  # the clock synchronized: reading costs nothing
        return None
    return ("diverged", f"training loss non-finite or above {divergence.limit:.0f} "
                        f"(1000 x chance) in epoch {epoch}")


def _reported(run: Run, epoch: int, acc: float, val_loss: float) -> tuple[str, str] | None:
    """After an epoch's evaluation, on the lead: the run's end (outcome, reason) if the
    study stops it or it stops early, else None."""
    try:
        run.report(acc, epoch, loss=val_loss)  # the study decides: Stop ends the run
    except ENDINGS as e:
        return ended(e)
    early = run.config.stop(run.curve)
    return ("early-stopped", early) if early else None


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


