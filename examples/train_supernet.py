"""Pre-train a one-shot InstaNAS supernet (the same as ``instanas-gym train-supernet``).

    python examples/train_supernet.py --dataset fashion_mnist --epochs 10 --run.out runs/supernet
    python examples/train_supernet.py --run.out runs/supernet --resume          # continue a killed run
    torchrun --nproc-per-node 2 examples/train_supernet.py --dataset cifar10 --data.root ~/data
    python examples/train_supernet.py --mask-sampling mobilenetv2 --width-mult 0.15 --run.out runs/mbv2_w015
    python examples/train_supernet.py --mask-sampling fixed --fixed-mask runs/search/top_mask.json --run.out runs/arch

Writes ``OUT/last.pt``; the environment loads it with ``gymnasium.make(ID, supernet="OUT/last.pt")``.
"""

import sys

from instanas_gym.cli import main

if __name__ == "__main__":
    main(["train-supernet", *sys.argv[1:]])
