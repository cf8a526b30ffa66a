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

_VIEWS = {  # env id -> (module:class of the env, of its vector env, the data set's kwargs)
    **{_id: ("instanas_env:InstaNASEnv", "vector:InstaNASVectorEnv", _kw) for _id, _kw in ENV_IDS.items()},
    **{_id: ("cascade:CascadeEnv", "cascade_vector:CascadeVectorEnv", ENV_IDS[_b]) for _id, _b in CASCADE_IDS.items()},
}
for _id, (_env, _vector, _kw) in _VIEWS.items():
    if _id not in registry:
        register(id=_id, entry_point=f"instanas_gym.envs.{_env}", vector_entry_point=f"instanas_gym.envs.{_vector}",
                 kwargs=dict(_kw))
