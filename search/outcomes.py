"""The outcome and state vocabulary: what became of a trial, in one place.

A trial's ``outcome`` user attribute says what became of its training; Optuna's
``TrialState`` says what the storage holds. Every module reads them from here.
"""

from __future__ import annotations

from optuna.trial import TrialState

# outcome -> when it is set
OUTCOMES = {
    "completed": "trained its whole schedule (or reached the time-to-accuracy target)",
    "early-stopped": "no better validation accuracy for `patience` epochs",
    "pruned": "stopped by the pruner; a pareto trial completes with the point it reached",
    "diverged": "training loss non-finite or far above chance",
    "oom": "out of device memory",
    "interrupted": "SIGINT or SIGTERM; its params are queued again",
    "unreached": "time-to-accuracy target not reached",
    "invalid": "a sampled combination the config refuses",
    "surplus": "another worker took the budget's last slot",
    "error": "training raised; its traceback is stored and the search goes on",
}
TRAINING_OUTCOMES = ("completed", "early-stopped", "pruned", "diverged", "oom")  # train()'s
DEFAULT_OUTCOME = "completed"  # of a trial that records none (an Optuna-made one)
INFEASIBLE = ("diverged", "oom")  # outcomes whose point is infeasible for the samplers

# Trial states that count toward a study's budget of trials.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Trial states whose cost is final (what a search spent, failed trials included).
ENDED = (*FINISHED, TrialState.FAIL)
# The outcome of a trial that records none, by its state.
STATE_OUTCOME = {
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
    TrialState.COMPLETE: "completed",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
}
