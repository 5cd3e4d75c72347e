"""The engine's overhead: ``search.training.engine.train`` against a minimal hand-written loop.

Both train the same model on the same data with the same settings: digits classes 5-9,
the built-in ``SmallCNN`` (seeded and built as the engine builds it), Adam at lr 1e-3,
fp32, the same on-device batching (``randperm`` of a CPU generator, then index
slicing; every example each epoch, the last batch partial) and the same number of
epochs. They alternate in one process (engine, hand, engine, hand, ...) after one
untimed warm-up of each, so slow drift in the machine (clock, other load) hits both
alike.

``--task cifar-sized`` (for a GPU) swaps in the CIFAR-sized task the benchmarks make
(``benchmarks/tasks.py``: 36,000 training images of 3x32x32, 10 classes) and a ResNet-18
from scratch (``--model`` picks another: ``cnn`` or any torchvision name);
``cifar-sized-small`` (2,000 images) checks that path on a CPU. Each run's achieved
TFLOP/s (torch's FLOP count per training example times samples per second) is printed,
with its share of the GPU's dense peak where ``common.PEAK_TFLOPS`` knows the GPU.

The measure is training throughput, samples per second over the training loop only:
the engine's own ``samples_per_second`` (its timed region, validation excluded; see
``search/training/timing.py``) and, for the hand loop, ``time.perf_counter`` around its epochs,
synchronized on CUDA. The last line is ``ratio: X``, the median engine throughput over
the median hand-written throughput (1.0 means no overhead).

Run from the repository root::

    .venv/bin/python benchmarks/overhead.py --quick
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

if __package__:  # python -m benchmarks.overhead
    from benchmarks import common
else:  # python benchmarks/overhead.py
    import common  # type: ignore[no-redef]

from search.training import models
from search.training.config import TrainConfig
from search.training.data import Data, DataSpec
from search.training.data import load as load_data
from search.training.engine import train

# --task: the data and the default model.
TASKS = {"digits": (DataSpec("digits", classes=(5, 6, 7, 8, 9)), "cnn"),
         "cifar-sized": (DataSpec("benchmarks.tasks:cifar_sized"), "resnet18"),
         "cifar-sized-small": (DataSpec("benchmarks.tasks:cifar_sized_small"), "resnet18")}
LR = 1e-3
SEED = 0


@dataclass(frozen=True)
class Settings:
    rounds: int
    epochs: int
    batch_size: int = 64
    model: models.ModelSpec = models.ModelSpec("cnn")


# Digits 5-9 has 536 training examples: 9 steps of 64 per epoch (the last one of 24), about
# 0.1 s on a 2-core CPU: --quick takes about 10 s there when the machine is otherwise idle,
# the full mode about 3 minutes.
QUICK = Settings(rounds=5, epochs=5)
FULL = Settings(rounds=20, epochs=30)


def run_engine(data: Data, dev: torch.device, s: Settings) -> dict[str, Any]:
    """One engine run; its own timed region gives the throughput."""
    config = TrainConfig(optimizer="adam", lr=LR, batch_size=s.batch_size, epochs=s.epochs,
                         precision="fp32", seed=SEED)
    r = train(config, data, s.model, device=dev)
    return {"samples_per_second": r.samples_per_second, "train_seconds": r.train_seconds,
            "samples": round(r.samples_per_second * r.train_seconds),
            "outcome": r.outcome, "final_accuracy": r.final_accuracy,
            "flops_per_sample": r.flops_per_sample}


def run_hand(data: Data, dev: torch.device, s: Settings) -> dict[str, Any]:
    """The minimal loop a user would write for the same training."""
    torch.manual_seed(SEED)  # the engine seeds the same way just before building the model
    net = models.build(s.model, in_channels=data.channels,
                       num_classes=data.num_classes).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(SEED)
    (x_all, y_all), n, bs = data.tensors["train"], data.train_size, s.batch_size
    samples = 0

    net.train()
    common.sync(dev)
    start = time.perf_counter()
    for _ in range(s.epochs):
        order = torch.randperm(n, generator=generator).to(dev)
        for i in range(0, n, bs):  # every example, the last batch partial: as the engine
            idx = order[i:i + bs]
            loss = nn.functional.cross_entropy(net(x_all[idx]), y_all[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            samples += len(idx)
    common.sync(dev)
    seconds = time.perf_counter() - start

    # Untimed: the validation accuracy, to check the two loops did the same training.
    net.eval()
    with torch.no_grad():
        val_x, val_y = data.tensors["val"]
        acc = (net(val_x).argmax(1) == val_y).sum().item() / data.val_size
    return {"samples_per_second": samples / seconds, "train_seconds": seconds,
            "samples": samples, "outcome": "completed", "final_accuracy": acc}


def main(argv: list[str] | None = None) -> int:
    p = common.parser("overhead", __doc__.splitlines()[0])
    p.add_argument("--rounds", type=common.positive_int,
                   help=f"timed rounds of (engine, hand) (default {QUICK.rounds} with "
                        f"--quick, else {FULL.rounds})")
    p.add_argument("--epochs", type=common.positive_int,
                   help=f"epochs per run (default {QUICK.epochs} with --quick, "
                        f"else {FULL.epochs})")
    p.add_argument("--batch-size", type=common.positive_int, default=64,
                   help="examples per step (default %(default)s)")
    p.add_argument("--task", choices=sorted(TASKS), default="digits",
                   help="digits (default), or the CIFAR-sized task for a GPU")
    p.add_argument("--model", default=None,
                   help="cnn or a torchvision name (default: cnn for digits, else resnet18)")
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    spec, default_model = TASKS[args.task]
    s = Settings(rounds=args.rounds or base.rounds, epochs=args.epochs or base.epochs,
                 batch_size=args.batch_size, model=models.ModelSpec(args.model or default_model))
    dev: torch.device = args.device
    common.apply_threads(args.threads)

    data = load_data(spec)
    data = data.to(dev, data.channels)
    if s.batch_size > data.train_size:
        p.error(f"--batch-size: larger than the training set ({data.train_size}), "
                f"got {s.batch_size}")
    print(f"overhead: engine vs hand-written loop on {dev} "
          f"(torch threads: {torch.get_num_threads()}); {args.task} ({data.train_size} train), "
          f"{s.model.name}, Adam lr {LR:g}, batch {s.batch_size}, fp32, "
          f"{s.epochs} epochs x {s.rounds} rounds", flush=True)

    env = common.environment(dev)
    note = common.busy_note() if dev.type == "cpu" else None
    if note:
        print(note, flush=True)

    run_engine(data, dev, s)  # untimed warm-up of each (the engine also warms the device)
    run_hand(data, dev, s)
    rounds = []
    for i in range(1, s.rounds + 1):
        engine, hand = run_engine(data, dev, s), run_hand(data, dev, s)
        rounds.append({"round": i, "engine": engine, "hand": hand,
                       "ratio": engine["samples_per_second"] / hand["samples_per_second"]})

    engine_sps = [r["engine"]["samples_per_second"] for r in rounds]
    hand_sps = [r["hand"]["samples_per_second"] for r in rounds]
    ratio = common.median(engine_sps) / common.median(hand_sps)
    flops = rounds[0]["engine"]["flops_per_sample"]  # torch's count of one training step

    def tflops(sps: float) -> list[Any]:
        achieved, share = common.tflops_columns(dev, "fp32", flops * sps)
        return [achieved, "-" if share is None else f"{share:.1%}"]

    rows: list[list[Any]] = [[r["round"], r["engine"]["samples_per_second"],
                              r["hand"]["samples_per_second"], r["ratio"],
                              *tflops(r["engine"]["samples_per_second"])] for r in rounds]
    rows.append(["median", common.median(engine_sps), common.median(hand_sps), ratio,
                 *tflops(common.median(engine_sps))])
    common.print_table(["round", "engine samples/s", "hand samples/s", "ratio",
                        "engine TFLOP/s", "of peak"], rows)
    same = all(r["engine"]["final_accuracy"] == r["hand"]["final_accuracy"] for r in rounds)
    print(f"final validation accuracy, engine {rounds[-1]['engine']['final_accuracy']:.4f}, "
          f"hand {rounds[-1]['hand']['final_accuracy']:.4f}"
          f" ({'identical in every round' if same else 'differs'})")

    out = common.write_json(args.out, {
        "benchmark": "overhead",
        "settings": {"task": args.task, "data": spec.name, "model": s.model.name,
                     "optimizer": "adam", "lr": LR, "precision": "fp32", "seed": SEED,
                     "rounds": s.rounds, "epochs": s.epochs, "batch_size": s.batch_size,
                     "quick": args.quick, "threads": torch.get_num_threads()},
        "environment": {**env, "load_average_end": common.load_average()},
        "rounds": rounds,
        "median_engine_samples_per_second": common.median(engine_sps),
        "median_hand_samples_per_second": common.median(hand_sps),
        "same_final_accuracy": same,
        "flops_per_sample": flops,
        "engine_tflops": common.tflops_columns(dev, "fp32", flops * common.median(engine_sps)),
        # Paired per round: less sensitive to load that changes between rounds.
        "median_round_ratio": common.median([r["ratio"] for r in rounds]),
        "ratio": ratio,
    })
    print(f"raw results: {out}")
    print(f"ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
