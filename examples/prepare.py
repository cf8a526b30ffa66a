"""Data, supernet and latency table for one data set, installed where the environment looks (the
same as ``instanas-gym prepare``); rerun the same command to continue after a kill.

    python examples/prepare.py cifar10                       # paper-scale budget, on the GPU when present
    python examples/prepare.py cifar100 --data.root ~/data --epochs 50 --run.precision bf16
    python examples/prepare.py fashion-mnist --width-mult 0.25 --torch-table

Afterwards ``gymnasium.make("InstaNAS-CIFAR10-v0")`` needs no argument: this script shows it.
"""

import gymnasium as gym
import tyro

from instanas_gym import ENV_IDS
from instanas_gym.training.config import PrepareConfig
from instanas_gym.training.prepare import prepare


def main(cfg: PrepareConfig) -> None:
    state = prepare(cfg)  # data, then the two supernet stages, the table, the install: each resumable
    print("stages done:", ", ".join(state["done"]))
    env_id = next(name for name, kwargs in ENV_IDS.items() if kwargs["dataset"] == cfg.name)
    env = gym.make(env_id, data_root=str(cfg.root), split="test")  # the installed supernet and table
    env.reset(seed=0)
    _, reward, *_, info = env.step(env.action_space.sample())
    print(f"{env_id}: a random mask, reward {reward:.2f}, {info['latency_ms']:.3f} ms by the installed table")


if __name__ == "__main__":
    main(tyro.cli(PrepareConfig, description=__doc__.split("\n\n")[0]))
