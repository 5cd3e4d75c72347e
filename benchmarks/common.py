"""Shared helpers for the benchmark scripts in ``benchmarks/``.

The conventions every script follows:

- ``--quick``: a small run that finishes in under 2 minutes on a 2-core CPU (a smoke
  check); without it, the full measurement with more rounds and epochs.
- ``--device auto|cpu|cuda``: ``auto`` is the first CUDA device when there is one, else
  the CPU.
- ``--threads N``: torch's CPU threads (default: torch's choice). On a machine shared with
  other work, 1 thread is far steadier: several processes each spinning 2 threads on 2
  cores slow each other by 2-10x at random.
- ``--out PATH``: the raw results as JSON (default ``results/<script>.json``), together
  with the environment the numbers depend on, so every run leaves a record.
- A table for people, then exactly one summary line ``<metric>: <value>`` as the last
  line of output, for scripts.

Benchmarks measure and report; they assert nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path("results")


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the shared flags: --quick, --device, --threads, --out."""
    p = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=description)
    p.add_argument("--quick", action="store_true",
                   help="a small run (under 2 minutes on a 2-core CPU)")
    p.add_argument("--device", default="auto", type=device,
                   help="auto (CUDA when available, else CPU), cpu or cuda[:N]")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads for torch (default: torch's own choice, "
                        f"{torch.get_num_threads()} here); 1 is steadier on a busy machine")
    p.add_argument("--out", default=RESULTS_DIR / f"{name}.json", type=Path,
                   help="where to write the raw results as JSON (default: %(default)s)")
    return p


def device(name: str) -> torch.device:
    """``auto``, ``cpu`` or ``cuda[:N]`` as a device; usable as an argparse ``type``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device, got {name!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"must be auto, cpu or cuda, got {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"CUDA is not available on this machine, got {name!r}")
    return dev


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts (rounds, epochs, batch size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def apply_threads(threads: int | None) -> None:
    """Set torch's CPU thread count when ``--threads`` was given."""
    if threads is not None:
        torch.set_num_threads(threads)


def sync(dev: torch.device) -> None:
    """Wait for queued device work, so a wall-clock reading counts it (a CPU-GPU sync)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: right-aligned columns; floats with 3 decimals."""
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    text = [[str(h) for h in headers]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in text]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print(format_table(headers, rows), flush=True)


def environment(dev: torch.device) -> dict[str, Any]:
    """What the measured numbers depend on: device, software, threads, and when and how run."""
    from search.training import timing

    return {
        "device": timing.fingerprint(dev),
        # Other processes on the machine skew CPU timings: compare with the core count.
        "load_average": load_average(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "argv": sys.argv,
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


# Dense peak TFLOP/s from NVIDIA's data sheets (without sparsity), by a substring of the
# device name: fp32 on CUDA cores, tf32 and bf16 (= fp16) on tensor cores. H200 shares
# H100 SXM's compute; the PCIe H100 is slower.
PEAK_TFLOPS = {
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0},
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0},
}


def peak_tflops(dev: torch.device, precision: str) -> tuple[float, str] | None:
    """The GPU's dense peak for a run in ``precision`` (fp32, fp16, bf16) and which peak
    that is, or None (a CPU, or a GPU not in the table).

    fp32 runs are held against the TF32 tensor-core peak when cuDNN may use TF32 (torch's
    default for convolutions), else against the CUDA-core fp32 peak.
    """
    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    row = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if row is None:
        return None
    if precision in ("fp16", "bf16"):
        return row["bf16"], "bf16/fp16 tensor"
    if torch.backends.cudnn.allow_tf32:
        return row["tf32"], "tf32 tensor (cuDNN convolutions)"
    return row["fp32"], "fp32"


def tflops_columns(dev: torch.device, precision: str, flops_per_second: float
                   ) -> tuple[float, float | None]:
    """Achieved TFLOP/s and its share of the device's peak (None where unknown)."""
    tflops = flops_per_second / 1e12
    peak = peak_tflops(dev, precision)
    return tflops, (tflops / peak[0] if peak else None)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def busy_note() -> str | None:
    """A warning when other work already loads the CPU (timings there will be noisy)."""
    load, cores = load_average(), os.cpu_count() or 1
    if load is None or load[0] < 0.5 * cores:
        return None
    return (f"note: load average {load[0]:.1f} on {cores} cores before starting: other "
            f"processes compete for the CPU, so CPU timings are noisy")


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON, creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
