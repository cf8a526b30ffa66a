"""The environments: the single Gymnasium env, the native batched vector env, wrappers for
Stable-Baselines3, rendering, and the dataclass that configures them."""
