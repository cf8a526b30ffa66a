"""The deployed cascade (ONNX Runtime) decides as the environment does: for a threshold rule, a learned
policy that reads only the answers (its first action decided once, at load) and one that also looks at
the image (its first decision a graph of its own), every image takes the environment's path and gets
the supernet's answer, in a batch or alone; the folded decision is the policy network's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instanas_gym.agents.cascade import CascadePolicy, fit_threshold_policy, greedy_actor, run_policy
from instanas_gym.agents.config import ControllerConfig
from instanas_gym.deploy.cascade import CascadeModel, export_cascade
from instanas_gym.envs.cascade_vector import CascadeVectorEnv
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, single_op_mask
from instanas_gym.utils.files import FileFormatError

FAMILY = ArchitectureFamily(np.stack([single_op_mask(1), mobilenetv2_mask(), all_ops_mask()]), ("cheap", "mbv2", "big"),
                            dataset="fashion_mnist")
N = 96


def _policy(kind: str, venv: CascadeVectorEnv) -> torch.nn.Module:
    if kind == "thresholds":
        return fit_threshold_policy(venv.cascade.outcomes, venv.cascade.network_ms, 3, float(venv.cascade.network_ms[1]))[0]
    torch.manual_seed(1)
    body = ControllerConfig((4, 8), 14) if kind == "image" else None
    policy = CascadePolicy(FAMILY.k, 3, 10, body)
    with torch.no_grad():  # a policy that stops where stage 1 was sure, so paths of several lengths occur
        top1 = (3 + 1) + 3 * (FAMILY.k + 1)  # after the one-hots of the stage and the arms: stage 1's top-1
        policy.net[0].weight[:, top1] = 0.0  # the hidden layer ignores it...
        policy.net[0].weight[0].zero_()
        policy.net[0].weight[0, top1] = 1.0  # ...but for unit 0, which passes it on alone
        policy.net[0].bias[0] = 0.0
        policy.net[2].weight[-1].zero_()
        policy.net[2].weight[-1, 0] = 40.0
        obs, _ = venv.reset(options={"index": np.arange(N)})
        first = greedy_actor(policy)(obs)  # the architectures run first: STOP where they are surer than usual
        policy.net[2].bias[-1] = -40.0 * float(np.median(venv.cascade.outcomes.confidence[first, np.arange(N)]))
    return policy.eval()


@pytest.mark.parametrize("kind", ["thresholds", "answers", "image"])
def test_the_deployed_cascade_takes_the_environments_path_for_every_image(trained_assets, tmp_path, kind):
    venv = CascadeVectorEnv(N, family=FAMILY, progress=False, **{**trained_assets, "split": "test"})
    policy = _policy(kind, venv)
    res = run_policy(greedy_actor(policy), venv, np.arange(N))
    export_cascade(tmp_path, venv.bandit.model, FAMILY, venv.cascade.network_ms, policy, 3)
    model = CascadeModel.load(tmp_path)
    assert (model.first_action is None) == (kind == "image")
    images = venv.bandit.data.images[:N]
    out = model.predict(images)
    np.testing.assert_array_equal(out["stages"], res["stages"])
    assert [list(a[:s]) for a, s in zip(out["arms"], out["stages"])] == [list(a) for a in res["arms"]]
    np.testing.assert_array_equal(out["prediction"] == venv.bandit.data.labels[:N], res["correct"].astype(bool))
    np.testing.assert_allclose(out["table_ms"], res["network_ms"], rtol=1e-6)
    assert len(set(out["stages"].tolist())) >= 2, "the test's policy should stop at several stages"
    stored = venv.cascade.outcomes.prediction  # (K, images): the supernet's answers, stored by the env
    for s in range(3):
        ran = np.flatnonzero(out["stages"] > s)
        np.testing.assert_array_equal(out["stage_prediction"][ran, s], stored[out["arms"][ran, s], ran])
    alone = [model.predict(images[i : i + 1]) for i in range(0, N, 7)]
    assert [int(a["stages"][0]) for a in alone] == out["stages"][::7].tolist()
    assert [int(a["prediction"][0]) for a in alone] == out["prediction"][::7].tolist()


def test_an_older_cascade_folder_asks_to_export_again(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": "instanas-cascade-v1"}')
    with pytest.raises(FileFormatError, match="export the policy again"):
        CascadeModel.load(tmp_path)
