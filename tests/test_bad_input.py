"""Bad input at the command line: every case is exit code 2 and exactly one line on stderr
naming the file (or flag) and the key or value, never a traceback, and nothing written:
no storage created, an existing one byte-for-byte unchanged, no output file.

Each case runs the real entry point (``search.cli.main``, as ``python -m search`` does) in
this process, with the working directory in ``tmp_path`` so default paths land there; a
few run as real processes too.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest

from search.cli import main
from tests import faultmodels as fm

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SPACE = "lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"
SECRET = "hunter2"


def recipe(tmp: Path, space: str = SPACE, **fields: Any) -> Path:
    """A valid tiny recipe (no pretrained weights: nothing here should ever train)."""
    fields.setdefault("model", {"name": "cnn"})
    fields.setdefault("trials", 1)
    return fm.write_recipe(tmp, space, **fields)


def raw_recipe(tmp: Path, text: bytes | str) -> Path:
    path = tmp / "raw.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def with_space(tmp: Path, text: bytes | str) -> tuple[Path, Path]:
    """A valid recipe whose space file holds ``text``: (recipe, space file)."""
    path = recipe(tmp)
    space = tmp / "tiny-space.yaml"
    space.write_bytes(text.encode() if isinstance(text, str) else text)
    return path, space


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def existing_storage(tmp: Path) -> str:
    """A storage that holds one study, 'other'."""
    url = f"sqlite:///{tmp / 'studies.db'}"
    optuna.create_study(study_name="other", storage=url, directions=["maximize", "minimize"])
    return url


@dataclass(frozen=True)
class Case:
    """``build(tmp_path)`` makes the files and returns the arguments and the strings the
    one error line must contain (the file or flag, and the key or value)."""

    id: str
    build: Callable[[Path], tuple[list[str], list[str]]]


def run_case(path: Path, names: list[str], *extra: str) -> tuple[list[str], list[str]]:
    """``search run RECIPE``: the line names the recipe file (with ``extra`` flags, the
    flag at fault instead, among ``names``)."""
    return ["run", str(path), "--quiet", *extra], names if extra else [str(path), *names]


def space_case(tmp: Path, text: bytes | str, names: list[str]) -> tuple[list[str], list[str]]:
    """``search run RECIPE`` whose space file holds ``text``: the line names that file."""
    path, space = with_space(tmp, text)
    return ["run", str(path), "--quiet"], [str(space), *names]


CASES = [
    # --- the recipe file itself
    Case("empty recipe", lambda t: run_case(raw_recipe(t, ""), ["empty"])),
    Case("comments only", lambda t: run_case(raw_recipe(t, "# nothing\n"), ["empty"])),
    Case("yaml syntax error", lambda t: run_case(raw_recipe(t, "name: x\nepochs: [1\n"),
                                                 ["YAML", "line 3"])),
    Case("tab indentation", lambda t: run_case(raw_recipe(t, "name: x\ndata:\n\tname: a\n"),
                                               ["YAML"])),
    Case("top level is a list", lambda t: run_case(raw_recipe(t, "- name: x\n"), ["list"])),
    Case("top level is a string", lambda t: run_case(raw_recipe(t, "just words\n"),
                                                     ["mapping"])),
    Case("not utf-8", lambda t: run_case(raw_recipe(t, b"name: t\xff\xfe\n"), ["UTF-8"])),
    Case("recipe is a directory", lambda t: run_case(t, ["directory"])),
    Case("recipe is missing", lambda t: run_case(t / "nope.yaml", ["not found"])),
    # --- keys and values
    Case("unknown key", lambda t: run_case(recipe(t, trails=3), ["trails"])),
    Case("unknown data key", lambda t: run_case(
        recipe(t, data={"name": "digits", "clases": [5]}), ["data.clases"])),
    Case("unknown baseline key", lambda t: run_case(
        recipe(t, baseline={"optimiser": "adam"}), ["baseline", "optimiser"])),
    Case("data is a list", lambda t: run_case(recipe(t, data=[1, 2]), ["data", "[1, 2]"])),
    Case("baseline is a list", lambda t: run_case(recipe(t, baseline=["adam"]),
                                                  ["baseline", "adam"])),
    Case("pruner is a list", lambda t: run_case(recipe(t, pruner=["none"]), ["pruner"])),
    Case("epochs is a word", lambda t: run_case(recipe(t, epochs="ten"), ["epochs", "ten"])),
    Case("trials is a string", lambda t: run_case(recipe(t, trials="3"), ["trials", "'3'"])),
    Case("lr is a word", lambda t: run_case(
        recipe(t, baseline={"optimizer": "adam", "lr": "fast"}), ["lr", "fast"])),
    Case("classes is a number", lambda t: run_case(
        recipe(t, data={"name": "digits", "classes": 5}), ["classes", "5"])),
    Case("model width is a word", lambda t: run_case(
        recipe(t, model={"name": "cnn", "width": "wide"}), ["width", "wide"])),
    Case("epochs is 0", lambda t: run_case(recipe(t, epochs=0), ["epochs", "0"])),
    Case("timeout is negative", lambda t: run_case(recipe(t, timeout=-5), ["timeout", "-5"])),
    Case("baseline lr is negative", lambda t: run_case(
        recipe(t, baseline={"optimizer": "adam", "lr": -1}), ["lr", "-1"])),
    Case("split_seed negative", lambda t: run_case(
        recipe(t, data={"name": "digits", "classes": [5, 6], "split_seed": -1}),
        ["split_seed", "-1"])),
    Case("val_fraction above 1", lambda t: run_case(
        recipe(t, data={"name": "digits", "classes": [5, 6], "val_fraction": 1.5}),
        ["val_fraction", "1.5"])),
    # A baseline batch larger than the training set is refused before the study exists.
    Case("baseline batch larger than the data", lambda t: run_case(
        recipe(t, baseline={"optimizer": "adam", "batch_size": 100000}),
        ["batch_size", "100000"])),
    # --- the space file
    Case("space range inverted", lambda t: run_case(
        recipe(t, "lr: {low: 0.1, high: 0.01}\n"), ["space", "lr", "low"])),
    Case("space range empty", lambda t: run_case(
        recipe(t, "lr: {low: 0.1, high: 0.1}\n"), ["space", "lr"])),
    Case("space unknown field", lambda t: run_case(
        recipe(t, "lrr: {low: 0.1, high: 1}\n"), ["space", "lrr"])),
    Case("space unknown spec key", lambda t: run_case(
        recipe(t, "lr: {low: 0.1, hi: 1}\n"), ["space", "hi"])),
    Case("space wrong type", lambda t: run_case(
        recipe(t, "lr: {low: a, high: 1}\n"), ["space", "lr", "'a'"])),
    Case("space unknown optimizer", lambda t: run_case(
        recipe(t, "optimizer: {choices: [adam, adamx]}\n"), ["space", "optimizer", "adamx"])),
    # A broken space file is named itself (not only the recipe that points to it): a list
    # at its top level, a YAML syntax error, bytes that are not UTF-8.
    Case("space is a list", lambda t: space_case(t, "- lr\n", ["list"])),
    Case("space yaml syntax error", lambda t: space_case(t, "lr: {low: 0.1\n", ["YAML"])),
    Case("space not utf-8", lambda t: space_case(
        t, b"lr: {low: 0.001, high: 0.1}\n# \xff\n", ["UTF-8"])),
    # A momentum range with an adam baseline and no `when: {optimizer: [...]}`: refused
    # before the study exists (every trial would fail).
    Case("space dimension the baseline optimizer lacks", lambda t: run_case(
        recipe(t, "momentum: {low: 0.8, high: 0.9}\n"), ["momentum"])),
    Case("space file missing", lambda t: run_case(_missing_space(t), ["space", "not found"])),
    Case("space is a directory", lambda t: run_case(_space_dir(t), ["space", "directory"])),
    # --- names the recipe gives
    Case("unknown optimizer", lambda t: run_case(
        recipe(t, baseline={"optimizer": "adamx"}), ["optimizer", "adamx"])),
    Case("unknown sampler", lambda t: run_case(recipe(t, sampler="bayes"),
                                               ["sampler", "bayes"])),
    Case("unknown sampler flag", lambda t: (["run", str(recipe(t)), "--sampler", "bayes"],
                                            ["--sampler", "bayes"])),
    Case("unknown pruner", lambda t: run_case(recipe(t, pruner="asha"), ["pruner", "asha"])),
    Case("floor above 1", lambda t: run_case(recipe(t, floor={"accuracy": 1.5}),
                                             ["floor.accuracy", "1.5"])),
    Case("floor both ways", lambda t: run_case(
        recipe(t, floor={"accuracy": 0.9, "below_baseline": 0.05}), ["floor"])),
    Case("floor unknown key", lambda t: run_case(recipe(t, floor={"above": 0.5}),
                                                 ["floor.above", "unknown key"])),
    Case("bad pruner option", lambda t: run_case(
        recipe(t, pruner={"name": "pareto-sha", "eta": 1}), ["pruner", "eta"])),
    # Errors found while loading the data and the model name the recipe file.
    Case("unknown model", lambda t: run_case(recipe(t, model={"name": "nosuchnet"}),
                                             ["model.name", "nosuchnet"])),
    Case("unknown model module", lambda t: run_case(
        recipe(t, model={"name": "nosuchmodule:build"}), ["model.name", "nosuchmodule"])),
    Case("unknown data set", lambda t: run_case(recipe(t, data={"name": "nosuchdata"}),
                                                ["data.name", "nosuchdata"])),
    Case("missing data dir", lambda t: run_case(
        recipe(t, data={"name": "mnist", "data_dir": "/nonexistent"}),
        ["data_dir", "/nonexistent"])),
    Case("classes not in the data", lambda t: run_case(
        recipe(t, data={"name": "digits", "classes": [42]}), ["classes", "42"])),
    # model.weights is resolved (the model built once) before the study exists.
    Case("unknown pretraining source", lambda t: run_case(
        recipe(t, model={"name": "cnn", "weights": "pretrained:imagenet"}),
        ["weights", "pretrained:imagenet"])),
    Case("weights file missing", lambda t: run_case(
        recipe(t, model={"name": "cnn", "weights": str(t / "nope.pt")}),
        ["weights", "nope.pt"])),
    # --- storage
    Case("storage flag not a url", lambda t: run_case(recipe(t), ["--storage", "x.db"],
                                                      "--storage", "x.db")),
    Case("storage flag unknown dialect", lambda t: run_case(
        recipe(t), ["--storage", "nosuchdb"], "--storage", f"nosuchdb://u:{SECRET}@h/db")),
    # A non-numeric port is a malformed URL, not a traceback.
    Case("storage flag bad port", lambda t: run_case(
        recipe(t), ["--storage", "postgresql://u:***@"], "--storage",
        f"postgresql://u:{SECRET}@localhost:abc/db")),
    Case("storage flag unreachable", lambda t: run_case(
        recipe(t), ["--storage", "postgresql://u:***@127.0.0.1"], "--storage",
        f"postgresql://u:{SECRET}@127.0.0.1:{closed_port()}/db")),
    Case("storage flag directory missing", lambda t: run_case(
        recipe(t), ["--storage", str(t / "no" / "dir")], "--storage",
        f"sqlite:///{t / 'no' / 'dir' / 'x.db'}")),
    Case("storage flag is a directory", lambda t: run_case(
        recipe(t), ["--storage", "directory"], "--storage", f"sqlite:///{t}")),
    # A bad `storage:` in the recipe names the recipe file and its key.
    Case("recipe storage not a url", lambda t: run_case(recipe(t, storage="x.db"),
                                                        ["storage", "x.db"])),
    Case("workers with sqlite", lambda t: run_case(recipe(t), ["--workers"], "--workers", "2")),
    Case("one device, two workers", lambda t: run_case(
        recipe(t), ["--workers 2", "--devices"], "--workers", "2", "--devices", "cpu")),
    # --- studies that are not there
    *[Case(f"{command} of a missing study", lambda t, c=command, x=extra: (
        [c, "nope", "--storage", existing_storage(t), *x],
        [str(t / "studies.db"), "'nope'", "other"]))
      for command, extra in (("status", []), ("best", []), ("pareto", []),
                             ("report", []), ("export", ["-o", "out.yaml"]))],
    *[Case(f"{command} without a storage file", lambda t, c=command, x=extra: (
        [c, "nope", *x], ["studies/nope.db"]))
      for command, extra in (("status", []), ("best", []), ("export", ["-o", "out.yaml"]),
                             ("pareto", []))],
    Case("worker of a missing study", lambda t: (
        ["worker", "nope", "--storage", existing_storage(t)], ["'nope'", "studies.db"])),
    Case("worker without a storage file", lambda t: (
        ["worker", "nope", "--storage", f"sqlite:///{t / 'none.db'}"], ["none.db"])),
    # --- exported configs (`search train --config`)
    *[Case(f"export file {label}", lambda t, x=text, n=names: (
        ["train", str(recipe(t)), "--config", str(_write(t / "cfg.yaml", x))],
        [str(t / "cfg.yaml"), *n]))
      for label, text, names in (
          ("of another format", "format: other\nparams: {lr: 0.1}\n", ["format", "other"]),
          ("that is a list", "- lr: 0.1\n", ["list"]),
          ("without params", "format: search/config-v1\n", ["params"]),
          ("with a bad param", "format: search/config-v1\nparams: {lr: -1}\n", ["lr", "-1"]),
          ("with an unknown param", "format: search/config-v1\nparams: {lrr: 1}\n",
           ["lrr"]),
          ("that is empty", "", ["empty"]),
      )],
    Case("export file missing", lambda t: (
        ["train", str(recipe(t)), "--config", str(t / "none.yaml")], [str(t / "none.yaml")])),
    Case("export file is a directory", lambda t: (
        ["train", str(recipe(t)), "--config", str(t)], [str(t), "directory"])),
    Case("train --set unknown field", lambda t: (
        ["train", str(recipe(t)), "--set", "lrr=1"], ["--set", "lrr"])),
    Case("train --set bad value", lambda t: (
        ["train", str(recipe(t)), "--set", "lr=-1"], ["--set", "lr", "-1"])),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _missing_space(tmp: Path) -> Path:
    path = recipe(tmp)
    (tmp / "tiny-space.yaml").unlink()
    return path


def _space_dir(tmp: Path) -> Path:
    path = recipe(tmp)
    (tmp / "tiny-space.yaml").unlink()
    (tmp / "tiny-space.yaml").mkdir()
    return path


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file and folder under ``folder``, with the bytes of the files."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def call_main(args: list[str], capfd: pytest.CaptureFixture[str],
              monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """``python -m search ARGS`` in this process: (exit code, stdout, stderr). An uncaught
    exception is what the user would see: a traceback and exit code 1."""
    monkeypatch.setattr(sys, "argv", ["search", *args])
    code: Any = 0
    capfd.readouterr()
    try:
        main()
    except SystemExit as e:
        code = e.code
    except Exception:  # noqa: BLE001 - reported exactly as the interpreter would
        sys.stderr.write(traceback.format_exc())
        code = 1
    out, err = capfd.readouterr()
    return (code if isinstance(code, int) else 1), out, err


def check_one_line(code: int, out: str, err: str, names: list[str]) -> None:
    lines = fm.stderr_lines(err)
    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: "), line
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"
    assert SECRET not in err + out


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
        case: Case, tmp_path: Path, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # default paths (studies/NAME.db, report files) land here
    args, names = case.build(tmp_path)
    before = snapshot(tmp_path)
    code, out, err = call_main(args, capfd, monkeypatch)
    after = snapshot(tmp_path)
    check_one_line(code, out, err, names)
    assert after == before, f"files changed: {sorted(set(after) ^ set(before))}"


# A few of the cases again as real processes: the exit code and stderr the shell sees.
REAL = ("empty recipe", "not utf-8", "unknown data key", "space range inverted",
        "storage flag unreachable", "status of a missing study", "export file of another format")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES if c.id in REAL])
def test_bad_input_in_a_real_process(case: Case, tmp_path: Path) -> None:
    args, names = case.build(tmp_path)
    before = snapshot(tmp_path)
    done = subprocess.run([sys.executable, "-m", "search", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env=fm.env())
    check_one_line(done.returncode, done.stdout, done.stderr, names)
    assert snapshot(tmp_path) == before

