"""One run in N processes: data parallelism with DistributedDataParallel.

A :class:`Team` is what the training loop sees of the other processes: it wraps the
model, takes this process's share of each global batch, waits for the slowest process at
the end of an epoch and carries the lead's word (go on, or how the run ended) to the
others. :data:`SOLO` is the team of a one-process run; every call is then a no-op.

Rank 0 is the trial's own process (the lead): it starts ranks 1..N-1 (``spawn``, so
each is a fresh interpreter, as under ``torchrun``), evaluates, reports to the study and
decides. What is timed, so the seconds are what a user of ``torchrun`` would wait for:

- process start: from before the other processes are spawned to the end of the first
  all-reduce (DDP's broadcast of the initial weights), each process loading its data
  and building its model meanwhile;
- each epoch up to a barrier, so it ends with the slowest process;
- not the evaluation (the lead's, once, while the others wait) nor the exchange of the
  verdict.

A process that dies (killed, out of memory) ends the run: the others' collectives fail
(or time out after ``TIMEOUT``), the lead reads why from the processes' error queue, and
:meth:`Team.close` terminates and reaps every process it started. A process whose lead
died exits on its own (it watches its parent).
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

TIMEOUT = dt.timedelta(seconds=120)  # a collective waits at most this for a lost process


class Team:
    """This process's place in a run: ``rank`` of ``world`` processes."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world
        self._procs: list[Any] = []
        self._errors: Any = None
        self._folder: tempfile.TemporaryDirectory | None = None

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def wrap(self, net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module the training step calls: ``net`` in DistributedDataParallel (frozen
        parameters stay out of the gradient all-reduce: DDP reduces only those that
        require a gradient), or ``net`` itself alone."""
        return wrap(net, device) if self.world > 1 else net

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's share of a global batch."""
        return shard(x, y, self.rank, self.world)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def agree(self, word: Any) -> Any:
        """The lead's ``word`` (any picklable value) in every process."""
        if self.world == 1:
            return word
        box = [word if self.lead else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def failure(self) -> str | None:
        """Why a process of this team failed (its first line), if one said so."""
        if self._errors is None:
            return None
        try:
            rank, message = self._errors.get(timeout=1.0)
            return f"rank {rank}: {message}"
        except queue.Empty:  # nothing said (killed): the exit codes say what they can
            died = [f"rank {i + 1} exited with {p.exitcode}" for i, p in enumerate(self._procs)
                    if p.exitcode not in (None, 0)]
            return "; ".join(died) or None

    def close(self) -> None:
        """Leave the process group, then stop and reap every process this lead started:
        no process outlives its run."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        self._procs = []
        if self._errors is not None:
            self._errors.close()
            self._errors = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


SOLO = Team()


def wrap(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``net`` in DistributedDataParallel on ``device`` (the process group initialized)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)


def shard(x: torch.Tensor, y: torch.Tensor, rank: int, world: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s contiguous share of a global batch of ``world`` shares: every
    process draws the same global batches (same seed), so together they train on exactly
    the examples one process would."""
    if world == 1:
        return x, y
    return x.tensor_split(world)[rank], y.tensor_split(world)[rank]


def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def start(world: int, devices: list[torch.device], target: Callable[..., None],
          args: tuple[Any, ...]) -> Team:
    """Spawn ranks 1..world-1 running ``target(team, device, *args)`` and join rank 0 (this
    process) to them; returns rank 0's team once the group has formed."""
    ctx = torch.multiprocessing.get_context("spawn")
    team = Team(0, world)
    team._folder = tempfile.TemporaryDirectory(prefix="search-ddp-")
    init = f"file://{team._folder.name}/rendezvous"
    team._errors = ctx.Queue()
    # On the CPU the processes share this process's threads: each gets its part.
    threads = max(1, torch.get_num_threads() // world) if devices[0].type == "cpu" else 0
    if threads:
        torch.set_num_threads(threads)
    for rank in range(1, world):
        p = ctx.Process(target=_child, name=f"search-rank-{rank}",
                        args=(rank, world, init, devices[rank], threads, os.getpid(),
                              team._errors, target, args))
        p.start()
        team._procs.append(p)
    try:
        dist.init_process_group(backend(devices[0]), init_method=init, rank=0,
                                world_size=world, timeout=TIMEOUT)
    except Exception:
        team.close()
        raise
    return team


def _child(rank: int, world: int, init: str, device: torch.device, threads: int,
           parent: int, errors: Any, target: Callable[..., None], args: tuple[Any, ...]
           ) -> None:
    """A rank other than 0: join the group and train as ``target`` says; tell the lead
    what went wrong, if anything, and exit with a non-zero code then."""
    threading.Thread(target=_watch, args=(parent,), daemon=True).start()
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    code = 0
    try:
        dist.init_process_group(backend(device), init_method=init, rank=rank,
                                world_size=world, timeout=TIMEOUT)
        target(Team(rank, world), device, *args)
    except BaseException as e:  # noqa: BLE001 - reported to the lead, then exit non-zero
        kind = "out of memory" if isinstance(e, torch.OutOfMemoryError) else type(e).__name__
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        errors.put((rank, f"{kind}: {first}"))
        code = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        errors.close()
        errors.join_thread()  # the message reaches the lead before the process ends
    os._exit(code)


def _watch(parent: int) -> None:
    """Exit when the lead is gone (killed with its worker): no orphan keeps training."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
