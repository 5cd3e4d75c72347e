"""Honest timing: the timed region, device warm-up, the device fingerprint and FLOPs.

The timed region (``train_seconds``) of a run is the sum over epochs of: shuffling and
batching the training data, batch mixing, forward, loss, backward, optimizer and
scheduler steps, and anything those trigger on first use in this run (``torch.compile``
compiles inside the first epoch, so its cost is counted: a user pays it every run).
Outside it: loading the data set, building the model and optimizer, counting FLOPs,
validation (timed separately as ``eval_seconds``) and evaluating the test split. On a
GPU the device is synchronized at both edges of every timed interval, so queued kernels
are counted in the interval that launched them; on the CPU the wall clock is read
directly.

A fresh process pays one-time costs on its first training (thread pools, allocator,
kernel selection: about 0.9 s of a 2.3 s digits run on CPU here), and again on the first
use of each autocast dtype. ``warm_up`` pays them once per process and precision, outside
any timed region, so the first trial of each precision is not penalized.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import torch
from torch import nn

from search.training.config import TrainConfig

_warm: set[tuple[str, str, bool]] = set()


class Stopwatch:
    """Accumulates synchronized wall-clock seconds over intervals on one device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self._start: float | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # a CPU-GPU sync point, only at the edges

    def __enter__(self) -> Stopwatch:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        from search.errors import UserError

        raise UserError(f"--device: unknown device, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        from search.errors import UserError

        raise UserError(f"--device: CUDA is not available on this machine, got {device!r}")
    return dev


def warm_up(device: torch.device, config: Any = None) -> None:
    """Pay the one-time start-up costs of training ``config``'s precision on ``device``
    (and fp32's: every run's loss and evaluation use it), once per process, untimed."""
    for cfg in (TrainConfig(), config or TrainConfig()):
        autocast, scaler = cfg.autocast(device), cfg.grad_scaler(device)
        key = (str(device), str(getattr(autocast, "fast_dtype", None)), scaler.is_enabled())
        if key in _warm:
            continue
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                              nn.Flatten(), nn.Linear(16 * 8 * 8, 10)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(32, 3, 8, 8, device=device)
        y = torch.randint(0, 10, (32,), device=device)
        for _ in range(5):
            with cfg.autocast(device):
                loss = nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        _warm.add(key)


def fingerprint(device: torch.device, processes: int = 1) -> dict[str, Any]:
    """What the measured seconds depend on: the device, its software, the threads, the
    cores this process may run on, and how many trainings share the device
    (``$SEARCH_SHARED``, set by ``search run --workers``). Seconds measured under other
    contention carry another key, so they are never ranked against these, unless the
    user says so (``--rank-shared``, ``$SEARCH_RANK_SHARED=1``): then the key leaves the
    contention out, and ``shared`` still records it. A data-parallel run in
    ``processes`` processes (one GPU each, or sharing the cores) says so in its key: its
    seconds are those of that many devices."""
    shared = int(os.environ.get("SEARCH_SHARED", "1"))
    apart = shared > 1 and os.environ.get("SEARCH_RANK_SHARED") != "1"
    info: dict[str, Any] = {
        "device_type": device.type,
        "cpu": _cpu_model(),
        "threads": torch.get_num_threads(),
        "cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "shared": shared,
        "processes": processes,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = info["cpu"]
    info["key"] = ((f"cuda:{info['device_name']}" if device.type == "cuda"
                    else f"cpu:{info['cpu']} x{info['threads']}")
                   + (f" data-parallel {processes}" if processes > 1 else "")
                   + (f" shared by {shared}" if apart else ""))
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


_flops: dict[tuple[Any, ...], float] = {}


def flops_per_sample(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     criterion: nn.Module) -> float:
    """FLOPs of one training step (forward + backward) per example, counted by torch.

    Counted on the model as configured (frozen blocks do no backward work), without an
    optimizer step, and with the gradients cleared afterwards, so training is unaffected.
    The count depends only on the architecture, which parameters train and the shape of
    one example; the pass also pays the first use of the precision (autocast, as the
    caller entered it) and memory layout it runs in (its forward in evaluation mode), so a
    process runs it once per such combination (about 0.25 s on the CPU, a tenth of a short
    trial)."""
    from torch.utils.flop_counter import FlopCounterMode

    kind = x.device.type
    key = (str(model), tuple(p.requires_grad for p in model.parameters()), tuple(x.shape[1:]),
           tuple(p.stride() for p in model.parameters() if p.ndim == 4),  # memory layout
           torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None)
    if key in _flops:
        return _flops[key]

    was_training = model.training
    model.eval()  # no BatchNorm statistics update from this counting pass
    counter = FlopCounterMode(display=False)
    with counter:
        loss = criterion(model(x), y)
        loss.backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    _flops[key] = counter.get_total_flops() / len(x)
    return _flops[key]

