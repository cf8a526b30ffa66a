#!/usr/bin/env bash
# The device paths on a GPU machine, in a few minutes: a bf16-autocast training step on CUDA, a
# torchrun smoke run on 1 GPU (2 when present, NCCL), the native vector env at 1,024 envs on the GPU
# (steps/s), and an eager PyTorch latency table timed with CUDA events on a tiny budget.
#
#     bash benchmarks/gpu_check.sh            # from the repository root; OUT=folder keeps the files
#
# It exits 1 at once, saying so, on a machine where torch sees no CUDA GPU. Data are synthetic
# (instanas_gym.testing): nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing was run" >&2
    exit 1
fi
OUT=${OUT:-$(mktemp -d)}
GPUS=$(python -c "import torch; print(min(2, torch.cuda.device_count()))")
echo "gpu_check: $(python -c "import torch; print(torch.cuda.get_device_name(0))"), $GPUS GPU(s) used, files in $OUT"
python -c "from tests.fixtures import write_cifar, write_fashion_mnist as w; write_cifar('$OUT/cifar', 'cifar10', n_train=5120, n_test=512); w('$OUT/fmnist', n_train=4096, n_test=512)"

echo "== 1. training steps on CUDA, width 1.0, CIFAR-10 shape, sandwich rule (fp32, then bf16 autocast)"
python - "$OUT" <<'PY'
import sys, time
import torch
from rich.console import Console
from tests.fixtures import skip_cifar_checksums
from instanas_gym.training.trainer import SupernetTrainer, TrainConfig
out = sys.argv[1]
for precision in ("fp32", "bf16"):
    cfg = TrainConfig(dataset="cifar10", data_root=f"{out}/cifar", width_mult=1.0, mask_sampling="sandwich",
                      batch_size=128, train_subset=5120, eval_subset=512, device="cuda", precision=precision,
                      threads=4, out=f"{out}/step_{precision}")
    with skip_cifar_checksums():
        t = SupernetTrainer(cfg, Console(quiet=True))
    t.net.train()
    order = torch.randperm(5120)
    for b in range(3):  # warm-up
        t.train_step(order[b * 128:(b + 1) * 128], b)
    torch.cuda.synchronize()
    t0, steps = time.perf_counter(), 30
    for b in range(steps):
        loss, _ = t.train_step(order[(b % 40) * 128:(b % 40 + 1) * 128], b)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"{precision}: {steps * 128 / dt:.0f} img/s (sandwich step: 4 networks), loss {loss / 128:.3f}, "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
PY

echo "== 2. torchrun, $GPUS process(es), NCCL"
torchrun --standalone --nproc-per-node "$GPUS" examples/train_supernet.py --data-root "$OUT/fmnist" --device cuda \
    --width-mult 0.25 --epochs 1 --batch-size 128 --train-subset 4096 --eval-subset 512 --out "$OUT/ddp"
python -c "from instanas_gym.checkpoint import load_checkpoint as l; c = l('$OUT/ddp/last.pt'); assert c['epoch'] == 1 and len(c['rng']['augment']) == $GPUS; print('torchrun: checkpoint of', $GPUS, 'rank(s), epoch 1')"

echo "== 3. native vector env, 1,024 envs, supernet on the GPU (bundled Fashion-MNIST)"
python - <<'PY'
import time
import gymnasium as gym
import numpy as np
import instanas_gym  # noqa: F401
for device in ("cuda", "cpu"):
    venv = gym.make_vec("InstaNAS-FashionMNIST-v0", num_envs=1024, vectorization_mode="vector_entry_point", device=device)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = [(rng.random((1024, 17, 5)) < 0.5).astype(np.uint8) for _ in range(23)]
    for a in actions[:3]:
        venv.step(a)
    t0 = time.perf_counter()
    for a in actions[3:]:
        venv.step(a)
    dt = time.perf_counter() - t0
    print(f"{device}: {20 * 1024 / dt:,.0f} env steps/s ({20 / dt:.1f} batched steps/s)")
PY

echo "== 4. eager PyTorch latency table on the GPU (CUDA events), tiny budget"
python -m instanas_gym.cli build-latency-table --backend torch --device cuda --passes 200 --validate-masks 30 \
    --out "$OUT/latency_cuda.json"
python -c "import json; m = json.load(open('$OUT/latency_cuda.json'))['meta']; assert m['device'] == 'cuda', m; print('table describes', m['device'], m['device_name'])"
echo "gpu_check: all device paths ran"
