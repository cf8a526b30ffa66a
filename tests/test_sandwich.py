from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.batchnorm import batch_norms, estimate_bn, recalibrate_bn, shared_bn_masks
from instanas_gym.model.checkpoint import load_checkpoint, load_supernet
from instanas_gym.space.data import load_split
from instanas_gym.space.family import probe_masks
from instanas_gym.space.masks import (
    FAMILIES,
    all_ops_mask,
    family_mask,
    fastest_mask,
    mac_costs,
    mobilenetv2_mask,
    sandwich_masks,
    single_op_mask,
)
from instanas_gym.space.search_space import FALLBACK_OP
from instanas_gym.training.sandwich import distillation_loss, sandwich_step
from instanas_gym.training.trainer import train_supernet
from instanas_gym.utils.paths import BUNDLED_LATENCY_TABLE

from .conftest import tiny_supernet, trained_like
from .helpers import Crash, raise_at
from .test_training import _cfg


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _op_has_grad(model, cell: int, op: int) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.cells[cell].ops[op].parameters())


def _family(mask: np.ndarray) -> str:
    per_cell = mask.sum(1)
    if (per_cell == 1).all():
        return "uniform_op" if len(set(mask.argmax(1))) == 1 else "single_op"
    return "bernoulli"


@pytest.mark.parametrize("distill", [True, False])
def test_sandwich_gradient_is_the_sum_over_every_network(distill):
    """The accumulated gradient equals the sum of each member's own gradient, one loss per member,
    and every op of every member gets a gradient."""
    model = tiny_supernet().train()
    x, y = _batch()
    masks = sandwich_masks(np.random.default_rng(0), fastest_mask(*mac_costs(model.space)), 3)
    losses, teacher = sandwich_step(model, x, y, masks, distill=distill)
    assert len(losses) == len(masks) and all(np.isfinite(losses))
    total = _grads(model)

    expected: dict[str, torch.Tensor] = {}
    for i, mask in enumerate(masks):
        model.zero_grad(set_to_none=True)
        logits = model(x, torch.from_numpy(mask).bool())
        loss = distillation_loss(logits, teacher) if distill and i else F.cross_entropy(logits, y)
        assert loss.item() == pytest.approx(losses[i], rel=1e-5)
        loss.backward()
        eff = model.space.effective_mask(mask)
        assert all(_op_has_grad(model, c, j) for c, j in zip(*np.nonzero(eff))), i
        for k, g in _grads(model).items():
            expected[k] = expected.get(k, 0) + g
    assert total.keys() == expected.keys()
    for k in total:
        torch.testing.assert_close(total[k], expected[k], rtol=1e-4, atol=1e-6)


def test_distillation_targets_are_detached_from_the_teacher():
    teacher = torch.randn(4, 10, requires_grad=True)
    student = torch.randn(4, 10, requires_grad=True)
    distillation_loss(student, teacher, temperature=2.0).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    assert distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(student, teacher, temperature=0.0)


def test_student_losses_send_no_gradient_into_the_teacher_pass():
    """Ops that only the teacher runs get exactly the teacher's own cross-entropy gradient: the
    students' distillation losses reach them through no path."""
    model = tiny_supernet().train()
    x, y = _batch()
    student = mobilenetv2_mask()
    sandwich_step(model, x, y, [all_ops_mask(), student, student])
    both = _grads(model)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x, torch.from_numpy(all_ops_mask()).bool()), y).backward()
    teacher_only = _grads(model)
    for name, g in teacher_only.items():
        if name.startswith("cells.") and ".ops.0." not in name:
            torch.testing.assert_close(both[name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_samplers_cover_every_family():
    rng = np.random.default_rng(0)
    space = tiny_supernet().space
    smallest = fastest_mask(*mac_costs(space))
    draws = [sandwich_masks(rng, smallest, 3) for _ in range(40)]
    assert all(np.array_equal(d[0], all_ops_mask()) and np.array_equal(d[1], smallest) for d in draws)
    randoms = [m for d in draws for m in d[2:]]
    assert {_family(m) for m in randoms} == set(FAMILIES)
    uniform = {int(m.argmax(1)[0]) for m in randoms if _family(m) == "uniform_op"}
    assert {0, FALLBACK_OP} <= uniform  # the MobileNetV2 path and the basic-block-only path
    bern = [family_mask(rng, "bernoulli") for _ in range(200)]
    density = [m.mean() for m in bern]
    assert 0.05 < min(density) < 0.25 and 0.6 < max(density) < 0.9  # keep prob 0.15-0.7, 85 bits each
    assert any((m.sum(1) == 0).any() for m in bern)  # empty cells are drawn too
    with pytest.raises(ValueError, match="family"):
        family_mask(rng, "dense")
    with pytest.raises(ValueError, match="n_random"):
        sandwich_masks(rng, smallest, -1)


def test_fastest_mask_takes_the_cheaper_of_empty_and_cheapest_op():
    ops = np.full((17, 5), 5.0)
    ops[:, 2] = 1.0
    empty = np.where(np.arange(17) % 2 == 0, 0.0, 3.0)
    mask = fastest_mask(ops, empty)
    assert (mask[::2] == 0).all()
    assert (mask[1::2, 2] == 1).all() and mask[1::2].sum() == 8
    with pytest.raises(ValueError, match="ops_cost"):
        fastest_mask(ops[:3], empty)


def test_probe_set_is_deterministic_and_spans_the_latency_range():
    table = LatencyTable.load(BUNDLED_LATENCY_TABLE)
    a, b, c = probe_masks(table, 0), probe_masks(table, 0), probe_masks(table, 1)
    assert len(a) >= 16 and len({name for name, _ in a}) == len(a)
    assert all(na == nb and np.array_equal(ma, mb) for (na, ma), (nb, mb) in zip(a, b))
    assert any(not np.array_equal(ma, mc) for (_, ma), (_, mc) in zip(a, c))
    names = dict(a)
    assert {"mobilenetv2", "all_ops", "basic_only", "fastest"} <= set(names)
    assert any(n.startswith("single_op") for n in names) and any(n.startswith("bernoulli_0.15") for n in names)
    ms = {n: table.network_ms(m) for n, m in a}
    assert min(ms.values()) == ms["fastest"] and max(ms.values()) == ms["all_ops"]


def test_recalibration_leaves_the_shared_statistics_untouched(fmnist_root):
    model = trained_like(tiny_supernet())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = load_split("fashion_mnist", "train", fmnist_root)
    mask = mobilenetv2_mask()
    calibrated = recalibrate_bn(model, data, mask, batches=3, batch_size=16)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and not calibrated.training
    new = calibrated.state_dict()
    assert not torch.equal(new["cells.5.ops.0.0.1.running_mean"], before["cells.5.ops.0.0.1.running_mean"])
    assert new["cells.5.ops.0.0.1.num_batches_tracked"].item() == 3
    assert torch.equal(new["cells.5.ops.1.0.1.running_mean"], before["cells.5.ops.1.0.1.running_mean"])  # unused op
    assert calibrated.cells[5].ops[0][0][1].momentum == model.cells[5].ops[0][0][1].momentum
    with pytest.raises(ValueError, match="batches"):
        recalibrate_bn(model, data, mask, batches=0)


def test_sandwich_training_resumes_exactly(fmnist_root, tmp_path):
    """A sandwich run killed at step 3 and resumed ends with the weights of an uninterrupted run."""
    full = replace(_cfg(fmnist_root, tmp_path / "full"), mask_sampling="sandwich", sandwich_random=1)
    metrics = train_supernet(full)
    assert 0 <= metrics["test_acc_all_ops"] <= 1
    cut = replace(full, run=replace(full.run, out=str(tmp_path / "cut")))
    with pytest.raises(Crash):
        train_supernet(cut, on_step=raise_at(3, Crash))
    train_supernet(replace(cut, resume=True))
    a, _ = load_supernet(tmp_path / "full" / "last.pt")
    b, _ = load_supernet(tmp_path / "cut" / "last.pt")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert load_checkpoint(tmp_path / "full" / "last.pt")["config"]["distill"] is True


def test_sandwich_config_is_checked(fmnist_root, tmp_path):
    with pytest.raises(ValueError, match="sandwich_random"):
        train_supernet(replace(_cfg(fmnist_root, tmp_path / "a"), mask_sampling="sandwich", sandwich_random=-1))


def test_estimate_bn_averages_the_given_masks_and_resets_unused_norms(fmnist_root):
    model = trained_like(tiny_supernet())
    data = load_split("fashion_mnist", "train", fmnist_root)
    masks = [mobilenetv2_mask(), single_op_mask(FALLBACK_OP)]
    estimate_bn(model, data, masks, batch_size=16)
    state = model.state_dict()
    assert not model.training
    assert state["cells.5.ops.0.0.1.num_batches_tracked"].item() == 1  # MobileNetV2's op, one batch
    assert state["cells.5.ops.4.0.1.num_batches_tracked"].item() == 1  # the basic block, one batch
    assert state["cells.5.ops.1.0.1.num_batches_tracked"].item() == 0  # run by neither: reset
    assert torch.equal(state["cells.5.ops.1.0.1.running_mean"], torch.zeros_like(state["cells.5.ops.1.0.1.running_mean"]))
    assert all(m.momentum == 0.1 for m in batch_norms(model))
    with pytest.raises(ValueError, match="masks"):
        estimate_bn(model, data, [])


def test_shared_bn_masks_cycle_through_sandwich_members():
    smallest = fastest_mask(*mac_costs(tiny_supernet().space))
    masks = shared_bn_masks(np.random.default_rng(0), smallest, 9)
    assert len(masks) == 9
    assert np.array_equal(masks[0], all_ops_mask()) and np.array_equal(masks[4], all_ops_mask())
    assert np.array_equal(masks[1], smallest) and np.array_equal(masks[5], smallest)


def test_frozen_bn_training_keeps_the_shared_statistics_and_learns_the_weights(fmnist_root, tmp_path):
    """bn_stats="frozen": statistics estimated once at the start, then unchanged by training steps;
    the weights (BatchNorm's affine ones included) still move; a resume continues bit for bit."""
    cfg = replace(_cfg(fmnist_root, tmp_path / "full"), mask_sampling="sandwich", sandwich_random=1,
                  bn_stats="frozen", bn_batches=3, grad_clip=1.0, epochs=1)
    seen = []
    train_supernet(cfg, on_step=lambda step: seen.append(step))
    model, _ = load_supernet(tmp_path / "full" / "last.pt")
    state = model.state_dict()
    assert len(seen) == 4
    assert state["stem.1.num_batches_tracked"].item() == 3  # the estimate's batches only, not the 4 steps
    start = trained_like(tiny_supernet())  # never equal to the trained weights
    assert not torch.equal(state["cells.0.ops.0.0.1.weight"], start.state_dict()["cells.0.ops.0.0.1.weight"])
    cut = replace(cfg, run=replace(cfg.run, out=str(tmp_path / "cut")))
    with pytest.raises(Crash):
        train_supernet(cut, on_step=raise_at(2, Crash))
    train_supernet(replace(cut, resume=True))
    other, _ = load_supernet(tmp_path / "cut" / "last.pt")
    for (name, a), b in zip(state.items(), other.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(("field", "value"), [("bn_stats", "running"), ("bn_batches", 0), ("grad_clip", -1.0)])
def test_bn_and_clip_settings_are_checked(fmnist_root, tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        replace(_cfg(fmnist_root, tmp_path), **{field: value})
