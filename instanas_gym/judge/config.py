"""The settings of the agent comparison (:class:`CompareConfig`, ``instanas-gym compare``) and the
agents it knows.

Light on purpose: the command line imports this module to parse its flags (each field's docstring is
its flag's help, one plain sentence), so it imports no torch and no agent.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Literal, get_args

from instanas_gym.agents.config import ControllerConfig, PolicyGradientConfig
from instanas_gym.envs.config import EnvConfig, JudgeConfig
from instanas_gym.utils.checks import check_int, check_number
from instanas_gym.utils.run import RunConfig, check_seed

Agent = Literal["REINFORCE", "REINFORCE-family", "PPO", "A2C", "PPO-family", "A2C-family", "VW-family", "router",
                "random", "MobileNetV2", "best-single", "threshold-cascade", "REINFORCE-cascade", "PPO-cascade",
                "A2C-cascade", "router-cascade"]
AGENTS: tuple[Agent, ...] = get_args(Agent)
#: The agents that act over the family's arms.
FAMILY_AGENTS = ("REINFORCE-family", "PPO-family", "A2C-family", "VW-family", "router", "best-single")


@dataclass(frozen=True)
class CompareConfig:
    """Arguments of :func:`~instanas_gym.judge.compare.compare_agents` (``instanas-gym compare`` takes
    each as a flag)."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment every agent learns on (training split) and is judged on (test split)."""
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/compare"))
    """Threads, device and the output folder; run.seed is unused, as every agent runs once per seed."""
    agents: tuple[Agent, ...] = AGENTS
    """The agents compared."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds each agent runs with, one run per seed."""
    total_steps: int = 16_000
    """Environment steps (training images) per agent and seed."""
    num_envs: int = 32
    """Sub-environments, so images per step."""
    pg: PolicyGradientConfig = field(default_factory=PolicyGradientConfig)
    """The REINFORCE agents' update."""
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    """The REINFORCE agents' controller network."""
    router_epochs: int = 4
    """Passes of the router over its training images."""
    judge: JudgeConfig = field(default_factory=lambda: JudgeConfig(measure=100))
    """How each trained agent is judged on the test split."""
    cascade_budget_ms: float = 0.4
    """The threshold and router cascades' budget: mean milliseconds of the networks run per image."""

    def __post_init__(self) -> None:
        unknown = [a for a in self.agents if a not in AGENTS]
        if unknown:
            raise ValueError(f"agents: unknown {unknown}; expected some of {AGENTS}")
        if not self.agents:
            raise ValueError(f"agents needs at least one of {AGENTS}")
        if not self.seeds:
            raise ValueError("seeds needs at least one seed, such as 0")
        for seed in self.seeds:
            check_seed("seeds", seed)
        for name in ("total_steps", "num_envs", "router_epochs"):
            check_int(name, getattr(self, name))
        check_number("cascade_budget_ms", self.cascade_budget_ms, low=0, low_open=True)
        if "VW-family" in self.agents and importlib.util.find_spec("vowpalwabbit") is None:
            others = " ".join(a for a in self.agents if a != "VW-family") or "REINFORCE-family"
            raise ValueError(f"agents: VW-family needs vowpalwabbit (pip install 'instanas-gym[baselines]'), "
                             f"or leave it out: --agents {others}")
