"""Faulty user models (loaded by the library as ``tests.faultmodels:NAME``) and what the
fault, worker and bad-input tests share: tiny recipes, and ``search`` in a subprocess.

Processes started here are always stopped: ``spawn`` puts each in its own process group,
and ``stop`` kills that group (the workers a ``search run --workers N`` started too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from click.testing import Result
from torch import nn

from search.training.models import SmallCNN

ROOT = Path(__file__).resolve().parent.parent
OOM_BATCH = 128  # a forward on this many examples or more "runs out of memory"
OOM_MESSAGE = "CUDA out of memory. Tried to allocate 2.00 GiB"


class BigBatchOOM(SmallCNN):
    """The built-in CNN (so the pretrained checkpoint fits) that raises CUDA's OOM error on
    a forward of ``OOM_BATCH`` or more examples with gradients on.

    ``training_only``: raise only in training mode, i.e. inside the training loop's steps;
    otherwise also on the first forward a GPU would run on that batch size, the engine's
    FLOP-counting pass (eval mode, gradients on). Validation runs without gradients, so a
    large validation batch never raises.
    """

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float,
                 training_only: bool) -> None:
        super().__init__(in_channels, num_classes, dropout=dropout)
        self.training_only = training_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = x.shape[0] >= OOM_BATCH and torch.is_grad_enabled()
        if big and (self.training or not self.training_only):
            raise torch.OutOfMemoryError(OOM_MESSAGE)
        return super().forward(x)


def oom_in_training_steps(*, num_classes: int, in_channels: int, dropout: float) -> nn.Module:
    return BigBatchOOM(in_channels, num_classes, dropout=dropout, training_only=True)


def oom_on_big_batches(*, num_classes: int, in_channels: int, dropout: float) -> nn.Module:
    return BigBatchOOM(in_channels, num_classes, dropout=dropout, training_only=False)


class CrashOnBigBatches(SmallCNN):
    """The built-in CNN with a bug that shows only in training on ``OOM_BATCH`` or more."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] >= OOM_BATCH:
            raise RuntimeError("boom: a bug in the model")
        return super().forward(x)


def crash_on_big_batches(*, num_classes: int, in_channels: int, dropout: float) -> nn.Module:
    return CrashOnBigBatches(in_channels, num_classes, dropout=dropout)


# -- recipes --------------------------------------------------------------------------------


def write_recipe(folder: Path, space: str, *, name: str = "tiny", **fields: Any) -> Path:
    """A tiny recipe and its space in ``folder``: digits 5-9, the built-in CNN pretrained
    on digits 0-4, 2 epochs, batch 64, stored in ``folder/<name>.db`` unless told."""
    (folder / f"{name}-space.yaml").write_text(space, encoding="utf-8")
    raw: dict[str, Any] = {
        "name": name,
        "data": {"name": "digits", "classes": [5, 6, 7, 8, 9]},
        "model": {"name": "cnn", "weights": "pretrained:digits-0-4"},
        "space": f"{name}-space.yaml",
        "epochs": 2,
        "trials": 2,
        "sampler": "random",
        "pruner": "none",
        "seed": 0,
        "storage": f"sqlite:///{folder / (name + '.db')}",
        "baseline": {"optimizer": "adam", "lr": 0.003, "batch_size": 64},
    }
    raw.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def pretrained() -> None:
    """Make the pretrained checkpoint once, here, so parallel workers never all make it."""
    from search.training import pretrain

    pretrain.checkpoint("digits-0-4")


def one_thread() -> None:
    """One torch intra-op thread: the tests share 2 cores with other test runs, and
    oversubscribed OpenMP threads make a tiny CNN epoch 10x slower. No test compares
    seconds. (The ``one_thread`` fixture in conftest.py does this for a test.)"""
    torch.set_num_threads(1)


def one_error_line(result: Result, *parts: str) -> str:
    """A CLI run (click's CliRunner) failed with exit 2 and exactly one line on stderr,
    nothing on stdout and no traceback, and that line contains every part."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# -- processes ------------------------------------------------------------------------------

# Runs the CLI with short heartbeats (1 s, stale after 3 s). A subprocess cannot see a
# test's monkeypatching, so the module constants are set here, before the CLI runs
# (open_storage reads them when called: test_storage.py checks that).
FAST_HEARTBEAT = (
    "import sys\n"
    "import search.tuning.storage as s\n"
    "s.HEARTBEAT_SECONDS, s.GRACE_SECONDS = 1, 3\n"
    "from search.cli import main\n"
    "sys.argv = ['search', *sys.argv[1:]]\n"
    "main()\n"
)


def search_cmd(*args: str, wrapper: str | None = None) -> list[str]:
    """``python -m search ARGS``, or the CLI through a ``python -c`` wrapper."""
    head = [sys.executable, "-c", wrapper] if wrapper else [sys.executable, "-m", "search"]
    return [*head, *args]


def env(threads: int | None = None) -> dict[str, str]:
    """This environment, with the repository importable and the thread count set."""
    env = dict(os.environ)  # SEARCH_CACHE (set by conftest) included
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _default_sigint() -> None:
    # A child of a non-interactive shell may inherit SIGINT ignored; Python then never
    # turns it into KeyboardInterrupt. Restore the default so the test means something.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(*args: str, wrapper: str | None = None, threads: int | None = None,
          cwd: Path | None = None, extra: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``search ARGS`` in its own process group, capturing its output as text
    (``extra``: environment variables to add)."""
    return subprocess.Popen(search_cmd(*args, wrapper=wrapper), cwd=cwd or ROOT,
                            env={**env(threads), **(extra or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)


def run(*args: str, timeout: float = 120, cwd: Path | None = None,
        threads: int | None = None, wrapper: str | None = None
        ) -> subprocess.CompletedProcess:
    """Run ``search ARGS`` to the end (killed, with its workers, after ``timeout``)."""
    proc = spawn(*args, wrapper=wrapper, threads=threads, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop([proc])
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Wait for ``proc`` and return (code, out, err); after ``timeout`` seconds (a hang
    guard) kill it and fail with the end of what it wrote."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"{' '.join(proc.args[3:])} still running after {timeout}s; "
                             f"its stderr ends:\n{(err or '')[-3000:]}") from None
    return proc.returncode, out, err


def stop(procs: Iterable[subprocess.Popen]) -> None:
    """Kill what is left of each process group we started, and reap the leader."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # its own group: start_new_session=True
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError):
            pass


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str,
             procs: Iterable[subprocess.Popen] = (), poll: float = 0.2) -> Any:
    """Poll ``condition`` until it is truthy; fail if a process ends first or time runs out."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                raise AssertionError(f"process exited ({p.returncode}) before {what}:\n"
                                     f"{err[-3000:]}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def trials_of(storage: Any, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, read through a fresh handle (no heartbeat, no callbacks)."""
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def running_with_curve(storage: Any, name: str) -> optuna.trial.FrozenTrial | None:
    """A RUNNING trial that has written at least one epoch of its curve, if any."""
    for t in trials_of(storage, name):
        if t.state == optuna.trial.TrialState.RUNNING and t.user_attrs.get("curve"):
            return t
    return None


def states(trials: Iterable[optuna.trial.FrozenTrial]) -> str:
    """A trial list for failure messages: number, state, outcome, retry origin."""
    return ", ".join(f"{t.number}:{t.state.name}:{t.user_attrs.get('outcome')}"
                     f"<-{t.system_attrs.get('failed_trial')}" for t in trials)


def check_no_traceback(err: str) -> None:
    """What a worker wrote holds no traceback. Optuna logs every failed trial (a surplus
    one, when two workers asked for the last slot, or an interrupted one) at WARNING level
    with its traceback, unless search lowers its verbosity: see test_faults.py."""
    assert "Traceback" not in err, err


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


class RankOneOOM(SmallCNN):
    """Runs out of memory in training steps in data-parallel rank 1 only (never alone)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if self.training and dist.is_initialized() and dist.get_rank() == 1:
            raise torch.OutOfMemoryError(OOM_MESSAGE)
        return super().forward(x)


def oom_in_rank_one(*, num_classes: int, in_channels: int, dropout: float) -> nn.Module:
    return RankOneOOM(in_channels, num_classes, dropout=dropout)
