"""Progress while a study runs: a study bar (trials, outcomes, elapsed, ETA) and a live
per-trial bar (epoch, accuracy, seconds, the trial's key params). Written to stderr."""

from __future__ import annotations

import sys
from typing import Any

import optuna
from tqdm.auto import tqdm

from search.training.config import TrainConfig
from search.training.tricks import FIELDS


def short_params(config: TrainConfig | dict[str, Any]) -> str:
    """The config's key fields (as each trick marks them), those not at their off value."""
    d = config.to_dict() if isinstance(config, TrainConfig) else config
    parts = []
    for name, field in FIELDS.items():
        v = d.get(name)
        if not field.key or v is None or v == field.off:
            continue
        parts.append(f"{name}={v:.3g}" if isinstance(v, float) else f"{name}={v}")
    return " ".join(parts)


class Progress:
    """Two tqdm bars; ``enabled=False`` prints nothing."""

    def __init__(self, *, total: int | None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.counts = {"done": 0, "pruned": 0, "failed": 0}
        self.study_bar = tqdm(total=total, desc="trials", unit="trial", position=0,
                              disable=not enabled, dynamic_ncols=True)
        self.trial_bar = tqdm(total=0, desc="trial", unit="epoch", position=1, leave=False,
                              disable=not enabled, dynamic_ncols=True,
                              bar_format="{desc} {n_fmt}/{total_fmt} epochs |{bar:20}| {postfix}")
        self._trial = -1

    def on_epoch(self, trial: optuna.trial.Trial, config: TrainConfig, epoch: int,
                 acc: float, seconds: float) -> None:
        if not self.enabled:
            return
        if trial.number != self._trial:
            self._trial = trial.number
            self.trial_bar.reset(total=config.epochs)
            self.trial_bar.set_description(f"trial {trial.number}")
        self.trial_bar.n = epoch
        self.trial_bar.set_postfix_str(f"acc {acc:.4f} {seconds:.2f}s  {short_params(config)}")

    def on_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        outcome = trial.user_attrs.get("outcome")
        # A stopped pareto trial completes with its point: count it by its outcome.
        if outcome in ("pruned", "unreached") or trial.state == optuna.trial.TrialState.PRUNED:
            self.counts["pruned"] += 1
        elif trial.state == optuna.trial.TrialState.FAIL or outcome in ("diverged", "oom"):
            self.counts["failed"] += 1
        else:
            self.counts["done"] += 1
        self.study_bar.update(1)
        self.study_bar.set_postfix(self.counts)

    def note(self, line: str) -> None:
        """One line about the run, shown even without bars: a wait is news."""
        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        self.trial_bar.close()
        self.study_bar.close()
