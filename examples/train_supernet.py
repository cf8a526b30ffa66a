"""Pre-train a one-shot InstaNAS supernet, then run the environment on it (``instanas-gym
train-supernet`` does the same first step).

    python examples/train_supernet.py --dataset fashion_mnist --epochs 10 --run.out runs/supernet
    python examples/train_supernet.py --run.out runs/supernet --resume          # continue a killed run
    torchrun --nproc-per-node 2 examples/train_supernet.py --dataset cifar10 --data.root ~/data
    python examples/train_supernet.py --mask-sampling mobilenetv2 --width-mult 0.15 --run.out runs/mbv2_w015
    python examples/train_supernet.py --mask-sampling sandwich --teacher runs/mbv2/last.pt --run.out runs/distilled

Writes ``OUT/last.pt`` (resumable), prints the test accuracy of the MobileNetV2 path, all ops and
random masks, and for a Fashion-MNIST supernet of the bundled width (0.25) steps the environment once
on it (``gymnasium.make(ID, supernet="OUT/last.pt")``).
"""

import os
from pathlib import Path

import gymnasium as gym
import tyro

import instanas_gym  # noqa: F401  (registers the environments)
from instanas_gym.space.masks import mobilenetv2_mask
from instanas_gym.training.config import TrainConfig
from instanas_gym.training.trainer import train_supernet


def main(cfg: TrainConfig) -> None:
    train_supernet(cfg)  # one process, or one per rank under torchrun; prints the test accuracy
    if os.environ.get("RANK", "0") != "0":
        return
    supernet = Path(cfg.run.out) / "last.pt"
    print(f"wrote {supernet}")
    if cfg.dataset == "fashion_mnist" and cfg.width_mult == 0.25:  # the bundled latency table's supernets
        env = gym.make("InstaNAS-FashionMNIST-v0", supernet=str(supernet), data_root=cfg.data.root, split="test")
        env.reset(seed=0)
        _, reward, *_, info = env.step(mobilenetv2_mask())
        print(f"the environment on {supernet}: MobileNetV2 path, reward {reward:.2f}, "
              f"{info['latency_ms']:.3f} ms, {'right' if info['correct'] else 'wrong'}")


if __name__ == "__main__":
    main(tyro.cli(TrainConfig, description=__doc__.split("\n\n")[0]))
