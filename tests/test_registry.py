"""The trick registry: every trick through a real training run, and what derives from it.

One parametrized test trains the engine with each trick switched on (Composer's "one test
runs every method through a real training step") and proves it reached training: the
trained model differs from the baseline's, or, for switches that change nothing on a CPU
(TF32, cuDNN autotuning, the memory format, compiling with the eager backend), the model
saw the switch while it trained.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from search.training import engine
from search.training.config import TrainConfig
from search.training.models import ModelSpec
from search.training.tricks import FIELDS, TRICKS
from search.training.tricks import compile as compiler
from tests.usermodels import PRETRAINED, SEEN, target_data

ROOT = Path(__file__).resolve().parent.parent
MODEL = ModelSpec("tests.usermodels:observing_cnn", weights=PRETRAINED)
BASE = TrainConfig(epochs=1, batch_size=64, seed=0)

# Each trick switched on; a new trick adds its line here (the coverage test says so).
ON: dict[str, dict[str, Any]] = {
    "optimizer": {"optimizer": "momentum", "lr": 0.05},
    "schedule": {"lr_schedule": "cosine", "warmup": 0.2},
    "length": {"batch_size": 32},
    "accumulation": {"accumulate": 2},
    "data_parallel": {"data_parallel": 2},
    "freezing": {"frozen_layers": 2},
    "architecture": {"depth": 2},
    "augmentation": {"crop_padding": 1},
    "mixing": {"mixup_alpha": 0.4},
    "label_smoothing": {"label_smoothing": 0.2},
    "precision": {"precision": "bf16"},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "tf32": {"tf32": True},
    "cudnn_benchmark": {"cudnn_benchmark": True},
    "dropout": {"dropout": 0.5},
    "seed": {"seed": 1},
    # Nothing left to learn (every block frozen, a vanishing lr): the accuracy stalls.
    "clipping": {"clip_norm": 0.01},
    "early_stopping": {"patience": 1, "epochs": 4, "frozen_layers": 3, "optimizer": "sgd",
                       "lr": 1e-9},
}
# On a CPU these change no number: each is proven by what the model saw instead.
SWITCHES = {"channels_last", "compile", "tf32", "cudnn_benchmark"}


def _train(config: TrainConfig, model: ModelSpec = MODEL
           ) -> tuple[engine.TrainResult, list[dict[str, Any]]]:
    SEEN.clear()
    result = engine.train(config, target_data(), model, device="cpu", warm=False)
    assert result.outcome in ("completed", "early-stopped"), result.reason
    return result, list(SEEN)


@pytest.fixture(scope="module")
def baseline() -> tuple[engine.TrainResult, list[dict[str, Any]]]:
    return _train(BASE)


def test_the_table_of_tricks_covers_the_registry() -> None:
    assert set(ON) == {t.name for t in TRICKS}


@pytest.mark.parametrize("name", sorted(ON))
def test_every_trick_reaches_a_real_training_run(name: str, baseline: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiler, "OPTIONS", {"backend": "eager"})  # no C++ build on CPU
    plain, plain_seen = baseline
    if name == "compile":  # the built-in CNN itself: recording would break its graph
        result, _ = _train(BASE.replace(**ON[name]), ModelSpec("cnn", weights=PRETRAINED))
        assert result.tricks["compile"]["ran_compiled"]
        return
    result, seen = _train(BASE.replace(**ON[name]))
    if name == "early_stopping":
        assert result.outcome == "early-stopped" and result.epochs_run == 2, result.reason
        return
    if name == "data_parallel":  # two processes trained it, one record: the lead's
        assert result.device["processes"] == 2, result.device
        assert result.samples_per_second * result.train_seconds == pytest.approx(
            plain.samples_per_second * plain.train_seconds)  # both ranks' samples
        return
    if name not in SWITCHES:
        # Validation loss after one epoch: any change to training moves it.
        assert result.curve[0]["loss"] != plain.curve[0]["loss"]
        return
    assert seen and all(s[name] for s in seen) and not any(s[name] for s in plain_seen)
    assert not torch.backends.cuda.matmul.allow_tf32  # the switches are restored
    assert not torch.backends.cudnn.benchmark


def test_accumulation_runs_one_forward_per_micro_batch(baseline: Any) -> None:
    plain, plain_seen = baseline
    result, seen = _train(BASE.replace(accumulate=2))
    assert len(seen) == 2 * len(plain_seen)  # two micro-batches per optimizer step
    assert [s["batch"] for s in seen[:2]] == [32, 32]
    assert result.samples_per_second > 0 and result.epochs_run == 1


def test_accumulated_gradients_equal_the_whole_batchs() -> None:
    # Without BatchNorm, splitting a batch changes nothing but memory: the same step.
    torch.manual_seed(0)
    x, y = torch.randn(48, 6), torch.randint(0, 3, (48,))
    steps = {}
    for k in (1, 3):
        cfg = TrainConfig(optimizer="sgd", lr=0.1, accumulate=k, batch_size=48)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        torch.manual_seed(1)
        for p in model.parameters():
            nn.init.normal_(p)
        optimizer, criterion = cfg.build_optimizer(model), cfg.build_criterion()
        parts = cfg.split(x, y)
        assert len(parts) == k and sum(share for *_, share in parts) == pytest.approx(1.0)
        for xs, ts, share in parts:
            (criterion(model(xs), ts) * share).backward()
        optimizer.step()
        steps[k] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(steps[1], steps[3], strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_accumulation_needs_two_examples_per_micro_batch() -> None:
    from search.errors import UserError

    with pytest.raises(UserError, match=r"^accumulate: each micro-batch needs at least 2"):
        TrainConfig(batch_size=6, accumulate=4)


# -- derived from the registry -----------------------------------------------------------


def test_the_config_fields_are_the_registrys() -> None:
    assert TrainConfig.fields() == tuple(FIELDS)
    cfg = TrainConfig()
    for name, field in FIELDS.items():
        assert getattr(cfg, name) == field.default
    with pytest.raises(TypeError):  # keyword-only: a field order never matters
        TrainConfig("adam")  # type: ignore[misc]


def test_every_trick_module_declares_a_trick() -> None:
    modules = sorted(p.stem for p in (ROOT / "search/training/tricks").glob("*.py")
                     if p.stem != "__init__")
    assert len(modules) == len(TRICKS)
    for trick in TRICKS:
        assert trick.doc and trick.fields
        for field in trick.fields:
            assert field.check(field.default) == field.default, field.name


def _code_names(path: Path) -> set[str]:
    """Identifiers in ``path``'s code, and strings that are one identifier ("compile");
    comments and docstrings left out."""
    names: set[str] = set()
    tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.NAME:
            names.add(tok.string)
        elif tok.type == tokenize.STRING:
            docstring = i == 0 or tokens[i - 1].type in (tokenize.INDENT, tokenize.NEWLINE,
                                                          tokenize.NL, tokenize.DEDENT)
            text = tok.string.strip("\"'")
            if not docstring and re.fullmatch(r"[A-Za-z_]\w*", text):
                names.add(text)
    return names


# What a module may name: the loop's own batch size, seed and optimizer (the engine's
# objects), the sampler's `--seed` and `search pretrain --width` (the CLI's own options).
# The engine's own: the loop's batch and seed, its optimizer variable, and how many
# processes a run takes (data_parallel changes who runs the loop, not what a step does).
OWN = {"search/training/engine.py": {"batch_size", "seed", "optimizer", "data_parallel"},
       "search/tuning/space.py": set(), "search/cli.py": {"seed", "width"}}


@pytest.mark.parametrize("module", sorted(OWN))
def test_no_trick_is_named_in_the_engine_the_space_parser_or_the_cli(module: str) -> None:
    names = {t.name for t in TRICKS} | set(FIELDS)
    assert not (names - OWN[module]) & _code_names(ROOT / module)


def test_readme_table_is_the_registrys() -> None:
    from search.training.tricks import table

    readme = (ROOT / "README.md").read_text()
    inside = readme.split("<!-- tricks -->\n", 1)[1].split("<!-- /tricks -->", 1)[0]
    assert inside.strip() == table().strip()
