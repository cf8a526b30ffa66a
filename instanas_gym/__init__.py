"""instanas-gym: instance-aware neural architecture search (InstaNAS) as a Gymnasium environment.

Importing the package registers the environments::

    import gymnasium, instanas_gym
    env = gymnasium.make("InstaNAS-FashionMNIST-v0")        # bundled: works offline
    venv = gymnasium.make_vec("InstaNAS-FashionMNIST-v0", num_envs=64, vectorization_mode="vector_entry_point")
    cascade = gymnasium.make("InstaNAS-FashionMNIST-Cascade-v0")   # run architectures until confident
"""

from gymnasium.envs.registration import register, registry

from instanas_gym.utils.runtime import enlarge_onednn_cache

enlarge_onednn_cache()  # before any convolution runs: see instanas_gym.utils.runtime

__version__ = "0.1.0"

#: Environment id -> keyword arguments of :class:`instanas_gym.envs.instanas_env.InstaNASEnv`.
ENV_IDS: dict[str, dict[str, str]] = {
    "InstaNAS-FashionMNIST-v0": {"dataset": "fashion_mnist", "split": "search"},
    "InstaNAS-CIFAR10-v0": {"dataset": "cifar10", "split": "train"},
    "InstaNAS-CIFAR100-v0": {"dataset": "cifar100", "split": "train"},
}

#: The cascade view of each (:mod:`instanas_gym.envs.cascade`): up to 3 architectures of a family per image.
CASCADE_IDS: dict[str, str] = {name.replace("-v0", "-Cascade-v0"): name for name in ENV_IDS}

for _id, _kwargs in ENV_IDS.items():
    if _id not in registry:
        register(
            id=_id,
            entry_point="instanas_gym.envs.instanas_env:InstaNASEnv",
            vector_entry_point="instanas_gym.envs.vector:InstaNASVectorEnv",
            kwargs=dict(_kwargs),
        )
for _id, _base in CASCADE_IDS.items():
    if _id not in registry:
        register(
            id=_id,
            entry_point="instanas_gym.envs.cascade:CascadeEnv",
            vector_entry_point="instanas_gym.envs.cascade_vector:CascadeVectorEnv",
            kwargs=dict(ENV_IDS[_base]),
        )
