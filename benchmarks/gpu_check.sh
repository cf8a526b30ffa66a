#!/usr/bin/env bash
# The device paths on a GPU machine, in a few minutes: a bf16-autocast training step on CUDA, a
# torchrun smoke run on 1 GPU (2 when present, NCCL), the native vector env at 1,024 envs on the GPU
# (steps/s), and an eager PyTorch latency table timed with CUDA events on a tiny budget.
#
#     bash benchmarks/gpu_check.sh            # from the repository root; OUT=folder keeps the files
#
# It exits 1 at once, saying so, on a machine where torch sees no CUDA GPU. Data are synthetic
# (tests/fixtures.py): nothing is downloaded. `DEVICE=cpu SIZE=tiny bash benchmarks/gpu_check.sh` runs
# the same steps on the CPU at a tiny size (about 2 minutes), to check the script before a GPU run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

DEVICE=${DEVICE:-cuda}
if [ "${SIZE:-full}" = tiny ]; then  # the suite's dry run: width, images, steps, envs, table passes
    WIDTH=0.1 IMAGES=64 STEPS=2 BATCH=16 ENVS=8 PASSES=30
else
    WIDTH=1.0 IMAGES=5120 STEPS=30 BATCH=128 ENVS=1024 PASSES=200
fi
if [ "$DEVICE" = cuda ] && ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing was run" >&2
    exit 1
fi
OUT=${OUT:-$(mktemp -d)}
if [ "$DEVICE" = cuda ]; then
    GPUS=$(python -c "import torch; print(min(2, torch.cuda.device_count()))") BACKEND=nccl
    NAME=$(python -c "import torch; print(torch.cuda.get_device_name(0))")
else
    GPUS=1 BACKEND=gloo NAME="CPU (dry run)"
fi
echo "gpu_check: $NAME, $GPUS device(s) used, files in $OUT"
python -c "from tests.fixtures import write_cifar, write_fashion_mnist as w; write_cifar('$OUT/cifar', 'cifar10', n_train=$IMAGES, n_test=64); w('$OUT/fmnist', n_train=$IMAGES, n_test=64)"

echo "== 1. training steps on $DEVICE, width $WIDTH, CIFAR-10 shape, sandwich rule (fp32, then bf16 autocast)"
python - "$OUT" "$DEVICE" "$WIDTH" "$IMAGES" "$STEPS" "$BATCH" <<'PY'
import sys, time
import torch
from rich.console import Console
from tests.fixtures import skip_cifar_checksums
from instanas_gym.space.data import DataConfig, SubsetConfig
from instanas_gym.training.trainer import SupernetTrainer, TrainConfig
from instanas_gym.utils.run import RunConfig
out, device, width, images, steps, batch = sys.argv[1], sys.argv[2], float(sys.argv[3]), *map(int, sys.argv[4:])
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
for precision in ("fp32", "bf16"):
    cfg = TrainConfig(dataset="cifar10", data=DataConfig(f"{out}/cifar"), width_mult=width, mask_sampling="sandwich",
                      batch_size=batch, subset=SubsetConfig(images, 64),
                      run=RunConfig(device=device, precision=precision, threads=4 if device == "cuda" else 1,
                                    out=f"{out}/step_{precision}"))
    with skip_cifar_checksums():
        t = SupernetTrainer(cfg, Console(quiet=True))
    t.net.train()
    order, n_batches = torch.randperm(images), images // batch
    for b in range(3):  # warm-up
        t.train_step(order[(b % n_batches) * batch:(b % n_batches + 1) * batch], b)
    sync()
    t0 = time.perf_counter()
    for b in range(steps):
        loss, _ = t.train_step(order[(b % n_batches) * batch:(b % n_batches + 1) * batch], b)
    sync()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    print(f"{precision}: {steps * batch / dt:.0f} img/s (sandwich step: 4 networks), loss {loss / batch:.3f}, "
          f"peak memory {peak:.2f} GiB")
PY

echo "== 2. torchrun, $GPUS process(es), $BACKEND"
torchrun --standalone --nproc-per-node "$GPUS" examples/train_supernet.py --data.root "$OUT/fmnist" \
    --run.device "$DEVICE" --run.threads 1 --width-mult "$WIDTH" --epochs 1 --batch-size "$BATCH" \
    --subset.train "$IMAGES" --subset.eval 64 --run.out "$OUT/ddp"
python -c "from instanas_gym.model.checkpoint import load_checkpoint as l; c = l('$OUT/ddp/last.pt'); assert c['epoch'] == 1 and len(c['rng']['augment']) == $GPUS; print('torchrun: checkpoint of', $GPUS, 'rank(s), epoch 1')"

echo "== 3. native vector env, $ENVS envs, supernet on $DEVICE (bundled Fashion-MNIST)"
python - "$DEVICE" "$ENVS" <<'PY'
import sys, time
import gymnasium as gym
import numpy as np
import instanas_gym  # noqa: F401
envs = int(sys.argv[2])
for device in dict.fromkeys((sys.argv[1], "cpu")):
    venv = gym.make_vec("InstaNAS-FashionMNIST-v0", num_envs=envs, vectorization_mode="vector_entry_point",
                        device=device, threads=1)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = [(rng.random((envs, 17, 5)) < 0.5).astype(np.uint8) for _ in range(23)]
    for a in actions[:3]:
        venv.step(a)
    t0 = time.perf_counter()
    for a in actions[3:]:
        venv.step(a)
    dt = time.perf_counter() - t0
    print(f"{device}: {20 * envs / dt:,.0f} env steps/s ({20 / dt:.1f} batched steps/s)")
PY

echo "== 4. eager PyTorch latency table on $DEVICE (CUDA events on a GPU), tiny budget"
python -m instanas_gym.cli build-latency-table --backend torch --run.device "$DEVICE" --table.passes "$PASSES" \
    --table.validate-masks 5 --table.repeats 1 --run.out "$OUT/table"
python -c "import json; m = json.load(open('$OUT/table/latency.json'))['meta']; assert m['device'] == '$DEVICE', m; print('table describes', m['device'], m.get('device_name', ''))"
echo "gpu_check: all device paths ran"
