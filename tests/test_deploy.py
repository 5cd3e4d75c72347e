"""The files in deploy/ work: `search create` makes a study without running it, and the
SLURM array script and the Kubernetes Indexed Job's container command, run here as two
array tasks / two pods against a journal study, meet its budget together."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from search.tuning.storage import open_storage
from tests import faultmodels as fm
from tests.test_workers import BASELINE, SPACE, WAIT, check_budget_met

optuna.logging.set_verbosity(optuna.logging.WARNING)
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
BUDGET = 4


def _created(tmp_path: Path) -> str:
    fm.pretrained()
    path = fm.write_recipe(tmp_path, SPACE, baseline=BASELINE, probes=False)
    url = f"journal://{tmp_path / 'tiny.journal'}"
    done = fm.run("create", str(path), "--storage", url, "--trials", str(BUDGET))
    assert done.returncode == 0, done.stderr
    assert f"study 'tiny' ready in {url}: a budget of {BUDGET} trials" in done.stdout
    return url


def _env(**extra: str) -> dict[str, str]:
    env = fm.env(threads=1)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return {**env, **extra}


def _pods(commands: list[list[str]], envs: list[dict[str, str]]) -> None:
    procs = [subprocess.Popen(c, env=e, cwd=fm.ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
             for c, e in zip(commands, envs, strict=True)]
    try:
        for p in procs:
            code, _out, err = fm.finish(p, timeout=WAIT)
            assert code == 0, err
            fm.check_no_traceback(err)
    finally:
        fm.stop(procs)


def test_create_makes_the_study_without_running_a_trial(tmp_path: Path) -> None:
    url = _created(tmp_path)
    trials = fm.trials_of(open_storage(url, must_exist=True), "tiny")
    assert Counter(t.state for t in trials) == {TrialState.WAITING: 1}  # the baseline
    again = fm.run("create", str(tmp_path / "tiny.yaml"), "--storage", url)
    assert again.returncode == 0, again.stderr  # the same recipe: the study is kept


def test_a_slurm_array_of_two_tasks_meets_the_budget(tmp_path: Path) -> None:
    url = _created(tmp_path)
    script = DEPLOY / "slurm.sbatch"
    assert "#SBATCH --array=" in script.read_text()
    # sbatch directives are comments to bash: each array task runs the script as is.
    _pods([["bash", str(script)]] * 2,
          [_env(SLURM_ARRAY_TASK_ID=str(i), SLURM_CPUS_PER_TASK="1", SEARCH_STORAGE=url,
                STUDY="tiny", DEVICE="cpu") for i in range(2)])
    check_budget_met(fm.trials_of(open_storage(url, must_exist=True), "tiny"), BUDGET)


def test_a_kubernetes_indexed_job_of_two_pods_meets_the_budget(tmp_path: Path) -> None:
    url = _created(tmp_path)
    job = yaml.safe_load((DEPLOY / "k8s-job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    [container] = job["spec"]["template"]["spec"]["containers"]
    values = {e["name"]: e.get("value") for e in container["env"]}
    assert "secretKeyRef" in str(container["env"])  # the URL (a password) from a Secret
    values.update(STUDY="tiny", SEARCH_STORAGE=url)
    # Kubernetes expands $(NAME) in a container's command from its env.
    command = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], part)
               for part in container["command"]]
    assert command[:2] == ["search", "worker"]
    _pods([command] * 2, [_env(JOB_COMPLETION_INDEX=str(i)) for i in range(2)])
    check_budget_met(fm.trials_of(open_storage(url, must_exist=True), "tiny"), BUDGET)
