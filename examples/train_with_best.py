"""A plain PyTorch training loop that uses a config exported by `search export`.

    search export mnist --knee -o best.yaml
    python examples/train_with_best.py best.yaml

Everything the search measured comes from the config's building blocks: the model's
arguments (depth, width, dropout), freezing of pretrained blocks and the memory format,
the optimizer (frozen parameters excluded), the per-batch lr schedule over `cfg.epochs`,
the loss with label smoothing, the batch transform (augmentation, mixup/cutmix), gradient
accumulation, the precision context and grad scaler, torch.compile and the GPU switches.
The loop trains `cfg.train_epochs` epochs: where the search measured the point
(`stop_after`), so it pays the seconds the search reported, not the whole schedule. It
shuffles as the search's engine does (a CPU generator seeded with
`cfg.seed`), so on the CPU it lands on the exported point bit for bit: the same
validation accuracy at the same epoch, the same test accuracy (tests/test_example.py).
The model and data here are the default study's (MNIST digits 5-9 at 14x14, the
built-in CNN pretrained on digits 0-4); put your own in their place.

A config measured data-parallel (`data_parallel: N`) trains the same way under torchrun,
one process per GPU (on the CPU, processes sharing the cores), each on its share of
every batch:

    torchrun --nproc_per_node N examples/train_with_best.py best.yaml
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

import search
from search.training import parallel
from search.training.data import DataSpec
from search.training.data import load as load_data
from search.training.models import ModelSpec
from search.training.models import build as build_model


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg, device) -> float:
    model.eval()
    with torch.no_grad(), cfg.autocast(device):
        logits = model(cfg.inputs(x.to(device)))
    return (logits.argmax(1).cpu() == y).float().mean().item()


def main(path: str) -> float:
    cfg = search.load_config(path)
    torch.manual_seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:  # under torchrun: one process per GPU (or sharing the CPU)
        if device == "cuda":
            device = f"cuda:{os.environ['LOCAL_RANK']}"
            torch.cuda.set_device(device)
        dist.init_process_group(parallel.backend(torch.device(device)))
        if world != cfg.data_parallel and rank == 0:
            print(f"note: the config was measured in {cfg.data_parallel} processes, "
                  f"this runs {world}")

    data = load_data(DataSpec("mnist5k", classes=(5, 6, 7, 8, 9), image_size=14))
    model = build_model(ModelSpec("cnn", width=16, weights="pretrained:mnist5k-0-4"),
                        in_channels=1, num_classes=data.num_classes, **cfg.model_kwargs())
    cfg.prepare(model)  # frozen blocks (no grad, no optimizer, frozen BN), memory format
    model.to(device)

    x_train, y_train = (t.to(device) for t in data.tensors["train"])
    steps_per_epoch = -(-len(y_train) // cfg.batch_size)  # the last batch may be partial
    optimizer = cfg.build_optimizer(model)
    scheduler = cfg.build_scheduler(optimizer, steps_per_epoch)  # laid out over cfg.epochs
    criterion = cfg.build_criterion()
    batch = cfg.build_batch(data.num_classes)  # augmentation, mixing, memory format
    scaler = cfg.grad_scaler(device)
    step_model = cfg.step_model(model)  # torch.compile'd when cfg.compile
    if world > 1:  # DistributedDataParallel under torchrun (frozen blocks not all-reduced)
        step_model = parallel.wrap(step_model, torch.device(device))
    if world > 1:
        torch.manual_seed(cfg.seed + rank)  # each rank mixes its own batches
    before_step = cfg.build_before_step(optimizer, scaler)  # gradient clipping, or None

    generator = torch.Generator().manual_seed(cfg.seed)  # shuffles as the search's engine
    best, best_state = -1.0, None
    for epoch in range(cfg.train_epochs):  # stop where the search measured the point
        model.train()
        order = torch.randperm(len(y_train), generator=generator).to(device)
        with cfg.switches(device):  # TF32, cuDNN autotuning (GPUs), restored after
            for step in range(steps_per_epoch):
                idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                # This rank's share of the global batch (all of it in one process).
                x, target = batch(*parallel.shard(x_train[idx], y_train[idx], rank, world))
                for xs, ts, share in cfg.split(x, target):  # micro-batches if accumulating
                    with cfg.autocast(device):
                        loss = criterion(step_model(xs), ts)
                    scaler.scale(loss * share).backward()
                if before_step:
                    before_step()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()

        val = accuracy(model, *data.tensors["val"], cfg, device)  # the same in every rank
        if rank == 0:
            print(f"epoch {epoch + 1}/{cfg.train_epochs}: validation accuracy {val:.4f}")
        if val > best:  # keep the weights of the best validation epoch
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    if rank == 0:
        print(f"test accuracy {accuracy(model, *data.tensors['test'], cfg, device):.4f}")
    if world > 1:
        dist.destroy_process_group()
    return best


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/train_with_best.py EXPORTED.yaml")
    main(sys.argv[1])
