"""torch.compile per run: a fresh compiler state, and a record of what the compiler did.

Dynamo's state outlives a model. Its caches, recompile counts and automatic-dynamic shape
decisions carry over from one trial to the next in a process: a later trial could run a
dynamic-shape graph only because an earlier trial used another batch size (a fresh
process, a user's, would compile static shapes first), or hit the recompile limit and
silently run eager. ``compile`` resets that state first, so every run compiles as a fresh
process would; ``stats`` then says what the compiler did in the run, stored with the
result (``TrainResult.tricks["compile"]``):

- ``compilations``: frames dynamo compiled, a first compile or a recompile (a new batch
  shape, such as a partial last batch, or the switch between training and evaluation);
- ``graphs``: distinct graphs captured; ``graph_breaks``: where tracing had to split;
- ``fallbacks``: frames dynamo gave up on, which ran eager (the recompile limit, or
  something it cannot trace);
- ``ran_compiled``: at least one frame compiled and none fell back.
"""

from __future__ import annotations

from typing import Any

import torch

from search.training.trick import switch

OPTIONS: dict[str, Any] = {}  # extra torch.compile arguments (tests set backend="eager")


def compile(model: torch.nn.Module) -> torch.nn.Module:  # noqa: A001 - torch's own name
    """``torch.compile(model)`` after resetting the compiler's process-wide state."""
    from torch._dynamo.utils import counters

    torch.compiler.reset()
    counters.clear()
    return torch.compile(model, **OPTIONS)


def stats() -> dict[str, Any]:
    """What the compiler did since ``compile`` (see the module docstring)."""
    from torch._dynamo.utils import counters

    total, ok = counters["frames"]["total"], counters["frames"]["ok"]
    return {"compilations": ok, "graphs": counters["stats"]["unique_graphs"],
            "graph_breaks": sum(counters["graph_break"].values()), "fallbacks": total - ok,
            "ran_compiled": ok > 0 and total == ok}


TRICK = switch("compile", "Compile the model's training step with torch.compile.",
               "`torch.compile` the model (its first epoch pays the compile: not judged)",
               order=80, step_model=lambda cfg, model: compile(model) if cfg.compile else model,
               warm_epochs=lambda cfg: 1 if cfg.compile else 0,
               record=lambda cfg: stats() if cfg.compile else None)
