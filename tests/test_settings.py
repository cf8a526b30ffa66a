"""Every setting is defined in one place. The settings objects of one concept each (the run's, the
data's, the subset's, the environment's, the reward's, the judging's) are nested whole, never repeated field by
field; any other flag name that several config classes share is a per-algorithm hyperparameter of the short list
below. A positional argument (``prepare``'s data set) is the command's subject, not a setting."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from collections import defaultdict

import tyro

import instanas_gym
from instanas_gym.envs.config import EnvConfig, JudgeConfig
from instanas_gym.envs.reward import RewardConfig
from instanas_gym.space.data import DataConfig, SubsetConfig
from instanas_gym.utils.run import RunConfig

#: Settings objects of one concept each: their fields appear in no other config class.
CONCEPTS = (RunConfig, DataConfig, SubsetConfig, EnvConfig, RewardConfig, JudgeConfig)
#: Field names several config classes may each have, each its own algorithm's value of the same kind
#: of setting.
PER_ALGORITHM = {
    "lr": "each optimizer's learning rate (REINFORCE's Adam, the supernet's SGD, prepare's sandwich stage)",
    "epochs": "passes of each training loop (supernet training, prepare's sandwich stage, the search's phase 2)",
    "width_mult": "the supernet's width in each recipe (train-supernet's 0.25, prepare's paper-scale 1.0)",
    "batch_size": "images per step of each training loop",
    "momentum": "SGD momentum of the supernet in its training and in the search",
    "weight_decay": "SGD weight decay of the supernet in its training and in the search",
    "bn_stats": "how the supernet's BatchNorm trains, in its training and in the search",
    "checkpoint_every": "steps between checkpoints of each resumable loop",
    "resume": "continue each resumable loop from its checkpoint",
    "log_every": "steps between log rows of each loop",
    "view": "the action view of REINFORCE and of the search's controller",
    "total_steps": "env steps of REINFORCE, and of each agent a comparison trains",
}


def config_classes() -> dict[str, type]:
    """Every dataclass named ``*Config`` defined in the package, by qualified name."""
    out = {}
    for info in pkgutil.walk_packages(instanas_gym.__path__, "instanas_gym."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.endswith("Config") and isinstance(obj, type) and dataclasses.is_dataclass(obj) \
                    and obj.__module__ == info.name:
                out[f"{info.name}.{name}"] = obj
    return out


def fields_by_name() -> dict[str, list[tuple[str, type | None]]]:
    """Field name -> (class name, the config class the field nests, or None) of every config class's
    flags (positional arguments left out)."""
    out: dict[str, list[tuple[str, type | None]]] = defaultdict(list)
    for cls in config_classes().values():
        hints = typing.get_type_hints(cls)
        extras = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            if tyro.conf.Positional in getattr(extras[f.name], "__metadata__", ()):
                continue
            nested = hints[f.name] if dataclasses.is_dataclass(hints[f.name]) else None
            out[f.name].append((cls.__name__, nested))
    return out


def nested_alike(owners: list[tuple[str, type | None]]) -> bool:
    """Whether every class with this field name nests the same settings object there."""
    kinds = {nested for _, nested in owners}
    return len(kinds) == 1 and None not in kinds


def test_every_config_class_is_found():
    names = {qualified.rsplit(".", 1)[1] for qualified in config_classes()}
    assert {"RunConfig", "DataConfig", "EnvConfig", "RewardConfig", "TrainConfig", "ReinforceConfig", "SearchConfig",
            "CompareConfig", "PrepareConfig", "PolicyGradientConfig"} <= names
    assert fields_by_name()["run"] and nested_alike(fields_by_name()["run"])


def test_the_run_data_env_and_reward_settings_are_defined_once():
    by_name = fields_by_name()
    repeated = []
    for concept in CONCEPTS:
        for f in dataclasses.fields(concept):
            owners = by_name[f.name]
            if len(owners) > 1 and not nested_alike(owners):
                others = sorted(name for name, _ in owners if name != concept.__name__)
                repeated.append(f"{concept.__name__}.{f.name} also in {others}")
    assert not repeated, "nest the settings object instead of repeating its fields: " + "; ".join(repeated)


def test_other_shared_field_names_are_per_algorithm_hyperparameters():
    concept_fields = {f.name for concept in CONCEPTS for f in dataclasses.fields(concept)}
    shared = {name: sorted(cls for cls, _ in owners) for name, owners in fields_by_name().items()
              if len(owners) > 1 and not nested_alike(owners) and name not in concept_fields}
    unlisted = {name: classes for name, classes in shared.items() if name not in PER_ALGORITHM}
    assert not unlisted, f"settings defined in several config classes (define each once, or nest it): {unlisted}"
    unused = sorted(set(PER_ALGORITHM) - set(shared))
    assert not unused, f"PER_ALGORITHM lists names no two config classes share any more: {unused}"
