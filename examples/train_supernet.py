"""Pre-train a one-shot InstaNAS supernet.

    python examples/train_supernet.py --dataset fashion_mnist --epochs 10 --out runs/supernet
    torchrun --nproc-per-node 2 examples/train_supernet.py --dataset cifar10 --data-root ~/data
    python examples/train_supernet.py --mask-sampling mobilenetv2 --width-mult 0.15 --out runs/mbv2_w015  # a plain MobileNetV2
    python examples/train_supernet.py --mask-sampling fixed --fixed-mask runs/search/top_mask.json --out runs/arch  # a searched architecture alone

Writes ``OUT/last.pt`` (resumable with ``--resume``); the environment loads it with
``gymnasium.make("InstaNAS-CIFAR10-v0", supernet=OUT/last.pt)``.
"""

from __future__ import annotations

from instanas_gym.cli import parse_dataclass
from instanas_gym.training import TrainConfig, train_supernet

if __name__ == "__main__":
    train_supernet(parse_dataclass(TrainConfig, __doc__))
