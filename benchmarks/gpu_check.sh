#!/usr/bin/env bash
# Every GPU path, in one go, in under 8 minutes on one modern GPU (run it first whenever a
# GPU is lent, and record what it prints in docs/benchmarks.md):
#   1. the device and the software (nvidia-smi, torch, CUDA);
#   2. benchmarks/gpu_check.py: fp32, bf16, fp16 + GradScaler, channels-last and
#      torch.compile through the engine on the CIFAR-sized task (ResNet-18), and one run
#      in 2 processes (DistributedDataParallel, NCCL) where there are 2 GPUs: outcome,
#      samples/s, TFLOP/s and share of peak, the dtype convolutions ran in, host-device
#      syncs per step, what the compiler did; and a diverging run that must stop;
#   3. the engine's overhead against a hand-written loop on that task (a ratio);
#   4. the speed-up a short search finds on that task (a ratio).
# Each step has its own time limit, so one slow step cannot eat the others' time.
# Usage: bash benchmarks/gpu_check.sh [PYTHON]   (default .venv/bin/python)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
status=0
step() { local limit=$1; shift; echo; echo "== $* (limit ${limit}s)"; timeout "$limit" "$@" || { echo "!! exit $? from: $*"; status=1; }; }
# Limits: 10 + 30 + 170 + 90 + 150 = 450 s at most, 7.5 minutes.
step 10 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
step 30 "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'device', torch.cuda.get_device_name())"
step 170 "$PY" benchmarks/gpu_check.py --device cuda --epochs 2
step 90 "$PY" benchmarks/overhead.py --device cuda --task cifar-sized --batch-size 256 --rounds 2 --epochs 2
step 150 "$PY" benchmarks/speedup.py --device cuda --recipe benchmarks/cifar-sized.yaml --search-seconds 45 --repeats 1
echo; echo "gpu_check.sh: $([ $status = 0 ] && echo ok || echo 'FAILED (see !! lines)')"
exit $status
