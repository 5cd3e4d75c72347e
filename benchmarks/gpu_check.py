"""Every GPU path of the engine, once, with what a careful reader would check.

For each precision and layout (fp32, bf16, fp16 with its GradScaler, channels-last, and
torch.compile) it trains the CIFAR-sized task's ResNet-18 (``benchmarks/tasks.py``) for
a few epochs through ``search.training.engine.train`` and prints, per path: the outcome, the
throughput and its TFLOP/s, the dtype the convolutions really ran in (a forward hook),
the **host-device syncs per training step** (``torch.cuda.set_sync_debug_mode`` counts
each implicit sync as a warning; the timed loop should have none but what a user's loop
has: fp16's GradScaler checks for infs once per step), and for the compiled path what
the compiler did (``result.tricks["compile"]``). Then a diverging run (SGD at lr 1e6) must stop
as ``diverged`` within its first epoch. On a CPU it runs the same paths on the small
task (syncs are not counted there: there is no device to wait for).

    .venv/bin/python benchmarks/gpu_check.py            # what benchmarks/gpu_check.sh runs
    .venv/bin/python benchmarks/gpu_check.py --quick --device cpu   # the paths, on a CPU
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

if __package__:
    from benchmarks import common
else:
    import common  # type: ignore[no-redef]

from search.training import models, timing
from search.training.config import TrainConfig
from search.training.data import DataSpec
from search.training.data import load as load_data
from search.training.engine import train
from search.training.models import ModelSpec
from search.training.tricks.precision import PRECISIONS

SYNCS_PER_EPOCH = 6  # outside the timed loop; see the printed note
PATHS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "fp16 + GradScaler": {"precision": "fp16"},
    "bf16 channels-last": {"precision": "bf16", "channels_last": True},
    "bf16 compile": {"precision": "bf16", "compile": True},
    "fp32 TF32 + cuDNN autotuning": {"tf32": True, "cudnn_benchmark": True},
}


def conv_dtypes(data: Any, cfg: TrainConfig, spec: ModelSpec, dev: torch.device) -> list[str]:
    """The dtypes the model's convolutions produce in ``cfg``'s precision and layout: one
    training-mode forward of a batch, hooked (outside any timed run)."""
    seen: set[str] = set()
    net = models.build(spec, in_channels=data.channels, num_classes=data.num_classes)
    net = cfg.prepare(net).to(dev)  # the run's memory format (and freezing)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.add(str(out.dtype)))
    x, _ = next(data.train_batches(cfg.batch_size, torch.Generator()))
    with cfg.autocast(dev), cfg.switches(dev):
        net(cfg.inputs(x))
    return sorted(seen)


def count_syncs(dev: torch.device, fn: Any) -> tuple[Any, int]:
    """Run ``fn()`` counting implicit host-device syncs (CUDA only; 0 elsewhere)."""
    if dev.type != "cuda":
        return fn(), 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return out, sum("synchroniz" in str(w.message) for w in caught)


def main(argv: list[str] | None = None) -> int:
    p = common.parser("gpu_check", __doc__.splitlines()[0])
    p.add_argument("--epochs", type=common.positive_int, default=None,
                   help="epochs per path (default 3; 1 with --quick)")
    args = p.parse_args(argv)
    dev: torch.device = args.device
    common.apply_threads(args.threads)
    small = args.quick or dev.type != "cuda"
    task = "benchmarks.tasks:cifar_sized_small" if small else "benchmarks.tasks:cifar_sized"
    model_name = "cnn" if small else "resnet18"
    epochs = args.epochs or (1 if args.quick else 3)
    batch = 64 if small else 256
    data = load_data(DataSpec(task))
    print(f"gpu_check on {dev}: {task} ({data.train_size} train), {model_name}, "
          f"batch {batch}, {epochs} epochs per path", flush=True)
    env = common.environment(dev)
    print(f"torch {torch.__version__}, cuda {torch.version.cuda}, "
          f"device {env['device']['device_name']}", flush=True)

    data = data.to(dev, data.channels)
    for precision in PRECISIONS:  # their syncs (fp16's scaler) are not the first path's
        timing.warm_up(dev, TrainConfig(precision=precision))
    rows: list[dict[str, Any]] = []
    table = []
    paths = dict(PATHS)
    # Two processes of one run (DistributedDataParallel): one GPU each where there are two,
    # on a CPU two processes sharing its cores.
    if dev.type != "cuda" or torch.cuda.device_count() >= 2:
        paths["bf16 data-parallel 2"] = {"precision": "bf16", "data_parallel": 2}
    else:
        print("  (data-parallel path skipped: one GPU here; it needs two)", flush=True)
    for name, changes in paths.items():
        cfg = TrainConfig(optimizer="adam", lr=1e-3, batch_size=batch, epochs=epochs, **changes)
        spec = ModelSpec(model_name)
        result, syncs = count_syncs(dev, lambda cfg=cfg, spec=spec: train(
            cfg, data, spec, device=dev))
        steps = data.steps_per_epoch(batch) * result.epochs_run
        tflops, share = common.tflops_columns(dev, cfg.precision, result.flops_per_second)
        row = {"path": name, "outcome": result.outcome, "accuracy": result.accuracy,
               "samples_per_second": result.samples_per_second, "tflops": tflops,
               "share_of_peak": share, "conv_dtypes": conv_dtypes(data, cfg, spec, dev),
               "syncs": syncs, "steps": steps, "evaluations": result.epochs_run,
               "compiled": result.tricks.get("compile"), "train_seconds": result.train_seconds}
        rows.append(row)
        table.append([name, result.outcome, f"{result.accuracy:.4f}",
                      f"{result.samples_per_second:,.0f}", f"{tflops:.2f}",
                      "-" if share is None else f"{share:.1%}", "/".join(row["conv_dtypes"]),
                      f"{syncs} / {steps}" if dev.type == "cuda" else "n/a (cpu)",
                      _epoch_seconds(result.curve), _compiled(result.tricks.get("compile"))])
        print(f"  {name}: {result.outcome} ({result.train_seconds:.1f} s)", flush=True)
    common.print_table(["path", "outcome", "val acc", "samples/s", "TFLOP/s", "of peak",
                        "conv dtype", "syncs / steps", "epoch s (first, last)", "compiled"],
                       table)
    print("syncs / steps: implicit host-device syncs of the whole run over its training "
          f"steps. Per epoch, outside the timed loop, up to {SYNCS_PER_EPOCH} are expected: "
          "the shuffled order's copy to the device, the divergence flag's read and "
          "validation (2), and once per run the test split (2); fp16's GradScaler adds one "
          "per step, as in any loop that uses it", flush=True)
    # fp16's scaler syncs every step, and data-parallel processes meet at every epoch's end.
    syncing = [r["path"] for r in rows if dev.type == "cuda" and "fp16" not in r["path"]
               and "data-parallel" not in r["path"]
               and r["syncs"] > SYNCS_PER_EPOCH * r["evaluations"] + 2]
    if syncing:
        print(f"!! host syncs inside the timed loop: {', '.join(syncing)}", flush=True)

    diverging = TrainConfig(optimizer="sgd", lr=1e6, batch_size=batch, epochs=2)
    bad = train(diverging, data, ModelSpec(model_name), device=dev)
    print(f"{'diverging (sgd 1e6)':>20}: {bad.outcome} after {bad.epochs_run} evaluated "
          f"epochs: {bad.reason}", flush=True)
    ok = bad.outcome == "diverged" and bad.epochs_run == 0
    common.write_json(args.out, {"environment": env, "rows": rows,
                                 "diverging": {"outcome": bad.outcome, "reason": bad.reason,
                                               "epochs_run": bad.epochs_run}})
    ok = ok and not syncing and all(r["outcome"] == "completed" for r in rows)
    print(f"gpu_check: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


def _epoch_seconds(curve: list[dict[str, float]]) -> str:
    """The first and the last epoch's training seconds: the first holds one-time costs (the
    compile, for a compiled path); a last epoch slower than the second would show a
    recompile or a dynamic-shape graph the later epochs run."""
    if not curve:
        return "-"
    ends = [e["seconds"] for e in curve]
    lengths = [b - a for a, b in zip([0.0, *ends], ends, strict=False)]
    return f"{lengths[0]:.2f}, {lengths[-1]:.2f}"


def _compiled(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "-"
    return (f"{'yes' if stats['ran_compiled'] else 'NO'}: {stats['compilations']} compilations, "
            f"{stats['graphs']} graphs, {stats['graph_breaks']} breaks, "
            f"{stats['fallbacks']} fallbacks")


if __name__ == "__main__":
    raise SystemExit(main())
