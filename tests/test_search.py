"""The full search (phases 2 and 3) on a tiny supernet and synthetic data: runs, resumes, reports."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from instanas_gym.agents.config import ControllerConfig, PolicyGradientConfig, SearchConfig
from instanas_gym.agents.policy import load_policy
from instanas_gym.agents.router import RoutedController
from instanas_gym.agents.search import _Search, load_search, search, stage_steps, stages
from instanas_gym.judge.search_report import evaluate_search, family_report, write_report
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.checkpoint import load_checkpoint, load_supernet
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.family import ArchitectureFamily, save_family
from instanas_gym.space.masks import all_ops_mask, load_mask, mobilenetv2_mask, one_op_masks, single_op_mask
from instanas_gym.utils.files import atomic_save
from instanas_gym.utils.run import RunConfig

from .conftest import env_config
from .helpers import Crash, raise_at

TINY = ControllerConfig(widths=(4, 8), input_size=14)


def _cfg(tiny_assets, out, env: dict | None = None, **kw) -> SearchConfig:
    return SearchConfig(
        env=env_config(tiny_assets, **(env or {})), run=RunConfig(threads=1, out=str(out)), controller=TINY,
        epochs=2, controller_images=64, batch_size=16, supernet_images=64, supernet_batch_size=32,
        finetune_images=64, checkpoint_every=2, log_every=1, **kw,
    )


def test_stages_alternate_then_finetune(tiny_assets, tmp_path):
    cfg = _cfg(tiny_assets, tmp_path)
    assert stages(cfg) == [("controller", 0), ("supernet", 0), ("controller", 1), ("supernet", 1), ("finetune", 2)]
    assert [stage_steps(cfg, k) for k in ("controller", "supernet", "finetune")] == [4, 2, 2]
    assert stages(replace(cfg, finetune_images=0))[-1] == ("supernet", 1)


@pytest.fixture(scope="module")
def full_search(tiny_assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("search_full")
    search(_cfg(tiny_assets, out))
    return out


def test_search_runs_all_phases_and_anneals(full_search, tiny_assets):
    ckpt = torch.load(full_search / "search.pt", weights_only=True)
    assert ckpt["stage"] == 5 and ckpt["step"] == 0
    history = ckpt["history"]
    assert [r["stage"] for r in history["controller"]] == ["controller"] * 8
    assert [r["stage"] for r in history["supernet"]] == ["supernet"] * 4 + ["finetune"] * 2
    ub = [r["upper_ms"] for r in history["controller"]]
    assert ub == sorted(ub, reverse=True) and ub[0] > ub[-1]  # the bound anneals down over phase 2
    cfg = _cfg(tiny_assets, full_search)
    table = LatencyTable.load(cfg.env.latency_table)
    assert ub[0] == pytest.approx(0.7 * float(table.cells_ms(all_ops_mask())))
    assert ub[-1] == pytest.approx(0.5 * float(table.cells_ms(mobilenetv2_mask())))
    # phase 3 trained with a decaying learning rate, phase 2 with a constant one
    assert history["supernet"][0]["lr"] == history["supernet"][3]["lr"] == cfg.supernet_lr
    assert history["supernet"][-1]["lr"] < history["supernet"][-2]["lr"] <= cfg.finetune_lr
    # the searched supernet changed, and the exported files load
    before, _ = load_supernet(tiny_assets["supernet"])
    after, _ = load_supernet(full_search / "supernet.pt")
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    stats = [k for k in before.state_dict() if "running_" in k]  # bn_stats="frozen": normalised, never updated
    assert stats and all(torch.equal(before.state_dict()[k], after.state_dict()[k]) for k in stats)
    for name in ("policy.pt", "controller_log.csv", "supernet_log.csv"):
        assert (full_search / name).is_file()
    saved = load_policy(full_search / "policy.pt")
    assert saved.view == "masks" and saved.meta["search_config"]["epochs"] == 2


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Crash])
def test_resume_mid_phase_loses_nothing(full_search, tiny_assets, tmp_path, interrupt):
    """Killed at global step 9 (in the second controller stage) and resumed: the same networks as an
    uninterrupted search (Ctrl-C saves at step 9; a crash falls back to the checkpoint of step 8)."""
    cut = _cfg(tiny_assets, tmp_path)
    with pytest.raises(interrupt):
        search(cut, on_step=raise_at(9, interrupt))
    ckpt = torch.load(tmp_path / "search.pt", weights_only=True)
    assert (ckpt["stage"], ckpt["step"]) == ((2, 3) if interrupt is KeyboardInterrupt else (2, 2))
    search(replace(cut, resume=True))
    for name in ("supernet.pt", "policy.pt"):
        a = torch.load(full_search / name, weights_only=True)["state_dict" if name == "policy.pt" else "model"]
        b = torch.load(tmp_path / name, weights_only=True)["state_dict" if name == "policy.pt" else "model"]
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs after resume"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    full_h = torch.load(full_search / "search.pt", weights_only=True)["history"]
    cut_h = torch.load(tmp_path / "search.pt", weights_only=True)["history"]
    assert all(strip(full_h[k]) == strip(cut_h[k]) for k in full_h)


def test_batch_statistics_search_updates_them(tiny_assets, tmp_path):
    search(replace(_cfg(tiny_assets, tmp_path), epochs=1, finetune_images=0, bn_stats="batch"))
    before, _ = load_supernet(tiny_assets["supernet"])
    after, _ = load_supernet(tmp_path / "supernet.pt")
    key = "stem.1.running_mean"
    assert not torch.equal(before.state_dict()[key], after.state_dict()[key])
    with pytest.raises(ValueError, match="bn_stats"):
        _cfg(tiny_assets, tmp_path, bn_stats="running")


def test_resume_with_other_settings_is_an_error(full_search, tiny_assets):
    with pytest.raises(ValueError, match="other settings.*epochs"):
        search(replace(_cfg(tiny_assets, full_search), epochs=3, resume=True))


def test_report_of_a_search(full_search, tiny_assets, tmp_path):
    ev = evaluate_search(full_search, measure=3, limit=64, references={"again": (str(tiny_assets["supernet"]), None)})
    results = ev["results"]
    assert {"InstaNAS (searched)", "MobileNetV2 path", "all ops", "MobileNetV2 path (pre-trained supernet)"} <= set(results)
    # a reference is judged like the pre-trained supernet: the same checkpoint gives the same figures
    again, pre = results["MobileNetV2 path (again)"], results["MobileNetV2 path (pre-trained supernet)"]
    assert again["accuracy"] == pre["accuracy"] and again["network_latency_ms"] == pre["network_latency_ms"]
    assert len([k for k in results if k.startswith("all cells")]) == 4
    for r in results.values():
        assert 0 <= r["accuracy"] <= 100 and r["measured_ms"] > 0 and r["measured_b64_ms"] > 0
    assert ev["masks"].shape == (64, 17, 5) and ev["network_ms"].shape == (64,)
    # the LUT column of the searched model is the mean over its per-image masks
    assert results["InstaNAS (searched)"]["network_latency_ms"] == pytest.approx(float(np.mean(ev["network_ms"])))
    report = write_report(full_search, ev).read_text()
    assert "| InstaNAS (searched) |" in report and "vs MobileNetV2 path, LUT: latency" in report
    for png in ("pareto.png", "masks_embedding.png", "latency_histogram.png"):
        assert (full_search / png).stat().st_size > 1000
    family = family_report({"A": ev, "B": ev}, tmp_path / "family").read_text()
    assert "InstaNAS A" in family and (tmp_path / "family" / "pareto.png").is_file()
    # the most used mask is saved for retraining alone
    distinct, counts = np.unique(ev["masks"].reshape(64, -1), axis=0, return_counts=True)
    assert np.array_equal(load_mask(full_search / "top_mask.json"), distinct[counts.argmax()].reshape(17, 5))
    assert "top_mask.json" in report


def test_a_reference_trained_on_a_fixed_mask_is_judged_on_it(full_search, tiny_assets, tmp_path):
    """A checkpoint of train_supernet --mask-sampling fixed carries its mask; the report judges that."""
    ckpt = load_checkpoint(tiny_assets["supernet"])
    arch = one_op_masks(np.random.default_rng(5), 1)[0]
    atomic_save({**ckpt, "train_mask": arch.tolist()}, tmp_path / "retrained.pt")
    results = evaluate_search(full_search, measure=0, limit=32,
                              references={"retrained": (str(tmp_path / "retrained.pt"), None)})["results"]
    got = results["trained alone (retrained)"]
    table = LatencyTable.load(tiny_assets["latency_table"])
    assert got["network_latency_ms"] == pytest.approx(table.network_ms(arch))
    assert "MobileNetV2 path (retrained)" not in results


def test_evaluate_judges_instance_awareness(full_search, tiny_assets, capsys):
    """``instanas-gym evaluate --instance-aware``: the searched policy against the static frontier,
    its files beside the search, its summary printed."""
    from instanas_gym.cli import main

    main(["evaluate", "--folders", str(full_search), "--instance-aware", "--judge.limit", "48", "--judge.measure", "0",
          "--data.root", tiny_assets["data_root"], "--run.threads", "1"])
    for name in ("instance_aware.json", "instance_aware.png", "hardest_easiest.png"):
        assert (full_search / name).stat().st_size > 0
    saved = json.loads((full_search / "instance_aware.json").read_text())
    assert saved["images"] == 48 and saved["e2e_ms"] > saved["network_ms"]
    assert "gain over the static frontier" in capsys.readouterr().out


# ---- a search over a family of architectures -----------------------------------------------------
FAMILY = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask(), single_op_mask(4)]), ("mbv2", "all", "one"))


def _family_cfg(tiny_assets, out, family_file, **kw) -> SearchConfig:
    kw = {"pg": PolicyGradientConfig(samples=2)} | kw
    return _cfg(tiny_assets, out, env={"family": str(family_file)}, view="family", **kw)


def _members(masks: torch.Tensor) -> np.ndarray:
    """The family index of each mask (B, 17, 5); -1 where it is no member."""
    same = (masks.numpy().astype(np.uint8)[:, None] == FAMILY.masks[None]).all((2, 3))
    return np.where(same.any(1), same.argmax(1), -1)


@pytest.fixture(scope="module")
def family_search(tiny_assets, tmp_path_factory):
    """A family search, with every (training mode, images, masks) the supernet was run on."""
    out = tmp_path_factory.mktemp("search_family")
    save_family(out / "family.json", FAMILY)
    calls = []
    forward = Supernet.forward

    def recording(self, images, masks):
        calls.append((self.training, images.detach().clone(), torch.as_tensor(np.asarray(masks)).bool()))
        return forward(self, images, masks)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Supernet, "forward", recording)
        search(_family_cfg(tiny_assets, out, out / "family.json"))
    return out, calls


def test_family_search_writes_a_family_policy(family_search, tiny_assets):
    out, _ = family_search
    saved = load_policy(out / "policy.pt")
    assert saved.view == "family" and saved.network.k == 3 and saved.family.names == ("mbv2", "all", "one")
    assert np.array_equal(saved.family.masks, FAMILY.masks)
    assert saved.meta["search_config"]["env"]["family"] == str(out / "family.json")
    assert saved.meta["search_config"]["view"] == "family"
    assert saved.meta["bounds"]["upper_ms"] > saved.meta["bounds"]["lower_ms"]
    history = torch.load(out / "search.pt", weights_only=True)["history"]
    assert [r["stage"] for r in history["controller"]] == ["controller"] * 8
    assert [r["stage"] for r in history["supernet"]] == ["supernet"] * 4 + ["finetune"] * 2
    for key in ("reward", "accuracy", "latency_ms", "upper_ms", "entropy", "distinct_arms", "greedy_prob"):
        assert all(np.isfinite(r[key]) for r in history["controller"]), key
    assert all(1 <= r["distinct_arms"] <= 3 for r in history["controller"])
    before, _ = load_supernet(tiny_assets["supernet"])
    after, controller, cfg = load_search(out)
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    assert isinstance(controller, RoutedController) and cfg["env"]["family"] == str(out / "family.json")


def test_family_search_trains_the_supernet_on_family_members(family_search):
    """Every mask the supernet ran is a family member; phase 3's are the (fixed) router's greedy arms."""
    out, calls = family_search
    assert all((_members(m) >= 0).all() for _, _, m in calls)
    training = [(x, m) for train, x, m in calls if train]
    assert len(training) == 4 + 2  # phase 2's supernet steps, then phase 3's
    router = load_policy(out / "policy.pt").network
    for x, m in training[-2:]:
        with torch.no_grad():
            assert np.array_equal(_members(m), router(x).argmax(1).numpy())
    # phase 2 draws from the behaviour policy: with the uniform mixed in, more than the greedy arm shows up
    assert len(np.unique(np.concatenate([_members(m) for _, m in training[:4]]))) > 1


def test_family_search_resumes_losing_nothing(family_search, tiny_assets, tmp_path):
    """Killed at global step 9 (second controller stage) and resumed: the same networks and logs."""
    full, _ = family_search
    cut = _family_cfg(tiny_assets, tmp_path, full / "family.json")  # the same settings, the same family file
    with pytest.raises(Crash):
        search(cut, on_step=raise_at(9, Crash))
    assert torch.load(tmp_path / "search.pt", weights_only=True)["step"] == 2
    search(replace(cut, resume=True))
    a, b = torch.load(full / "supernet.pt", weights_only=True), torch.load(tmp_path / "supernet.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    a, b = (load_policy(folder / "policy.pt").network.state_dict() for folder in (full, tmp_path))
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    full_h = torch.load(full / "search.pt", weights_only=True)["history"]
    cut_h = torch.load(tmp_path / "search.pt", weights_only=True)["history"]
    assert all(strip(full_h[k]) == strip(cut_h[k]) for k in full_h)


def test_resume_with_another_controller_kind_or_family_is_an_error(full_search, family_search, tiny_assets, tmp_path):
    out, _ = family_search
    with pytest.raises(ValueError, match="other settings.*family"):
        search(replace(_family_cfg(tiny_assets, full_search, out / "family.json"), resume=True))
    other = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask(), single_op_mask(2)]))
    save_family(out / "family.json", other)  # another family under the same name
    try:
        with pytest.raises(ValueError, match="another family"):
            search(replace(_family_cfg(tiny_assets, out, out / "family.json"), resume=True))
    finally:
        save_family(out / "family.json", FAMILY)


def test_evaluate_judges_a_family_search(family_search, tiny_assets):
    """The report and the instance-aware judgement take a family search: the routed members' masks,
    the router (with its routing rule) timed as the controller."""
    out, _ = family_search
    ev = evaluate_search(out, measure=0, limit=32, instance_aware=True)
    assert (_members(torch.from_numpy(ev["masks"])) >= 0).all()
    assert ev["controller_ms"] > 0 and ev["results"]["InstaNAS (searched)"]["distinct_masks"] <= 3
    assert ev["instance_aware"] is not None and (out / "instance_aware.json").is_file()


def test_family_controller_step_with_one_sample_uses_the_greedy_baseline(family_search, tiny_assets, tmp_path):
    out, _ = family_search
    s = _Search(_family_cfg(tiny_assets, tmp_path, out / "family.json", pg=PolicyGradientConfig(samples=1)))
    seen = []
    evaluate = s.bandit.evaluate
    s.bandit.evaluate = lambda idx, masks: seen.append(masks) or evaluate(idx, masks)
    row = s.controller_step(0, 8)
    assert len(seen) == 2 and all((_members(torch.from_numpy(m)) >= 0).all() for m in seen)  # sampled, greedy arms
    assert np.isfinite(row["baseline_reward"]) and np.isfinite(row["entropy"])
