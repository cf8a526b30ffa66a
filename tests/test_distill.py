"""Distillation from a fixed teacher in the sandwich rule: the loss, the frozen teacher, its record,
and runs resumed from any checkpoint."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instanas_gym.model.checkpoint import load_checkpoint, supernet_state
from instanas_gym.space.data import DataConfig, SubsetConfig, load_split
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, save_mask, single_op_mask
from instanas_gym.training.config import TrainConfig
from instanas_gym.training.sandwich import distillation_loss, member_loss, sandwich_step
from instanas_gym.training.teacher import Teacher, teacher_mask
from instanas_gym.training.trainer import train_supernet
from instanas_gym.utils.files import atomic_save, file_sha256
from instanas_gym.utils.run import RunConfig
from tests.conftest import tiny_supernet, trained_like
from tests.helpers import Crash, raise_at


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, str]:
    """Two tiny teacher checkpoints of different weights: "a" plain, "b" storing a train_mask."""
    folder = tmp_path_factory.mktemp("teachers")
    atomic_save(supernet_state(trained_like(tiny_supernet(1)), "fashion_mnist"), folder / "a.pt")
    atomic_save(supernet_state(trained_like(tiny_supernet(2)), "fashion_mnist", train_mask=single_op_mask(1).tolist()),
                folder / "b.pt")
    return {"a": str(folder / "a.pt"), "b": str(folder / "b.pt")}


def _cfg(root, out, teacher: str | None, table: str | None = None, **kw) -> TrainConfig:
    """Six steps (2 epochs x 3 batches of 16), a checkpoint after each."""
    return TrainConfig(data=DataConfig(str(root)), run=RunConfig(threads=1, out=str(out)), width_mult=0.1, epochs=2,
                       batch_size=16, subset=SubsetConfig(48, 32), lr=0.05, mask_sampling="sandwich",
                       sandwich_random=1, teacher=teacher, checkpoint_every=1, probe_images=16 if table else 0,
                       probe_table=table, **kw)


def test_the_largest_network_learns_labels_and_teacher_the_others_the_teacher_only():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    labels = torch.randint(0, 10, (8,), generator=g)
    ce, kl = F.cross_entropy(logits, labels), distillation_loss(logits, target)
    assert torch.allclose(member_loss(logits, labels, target, True, True), 0.5 * ce + 0.5 * kl)
    assert torch.allclose(member_loss(logits, labels, target, True, True, label_weight=1.0), ce)
    assert torch.allclose(member_loss(logits, labels, target, False, True), kl)
    assert torch.allclose(member_loss(logits, labels, target, True, False), ce)  # in place: the largest learns labels
    assert torch.allclose(member_loss(logits, labels, None, False, True), ce)  # no distillation


def test_every_member_learns_the_fixed_teachers_detached_outputs(fmnist_root, teachers):
    student = trained_like(tiny_supernet()).train()
    teacher = Teacher(teachers["a"], None, "fashion_mnist", student.space, torch.device("cpu"))
    images, labels = load_split("fashion_mnist", "train", fmnist_root).tensors()
    x, y = images[:16], labels[:16]
    soft = teacher(x)
    assert not soft.requires_grad
    leaf = soft.clone().requires_grad_(True)  # were it not detached, the backward passes would reach it
    masks = [all_ops_mask(), mobilenetv2_mask()]
    expected = [0.5 * F.cross_entropy(student(x, torch.from_numpy(all_ops_mask()).bool()), y)
                + 0.5 * distillation_loss(student(x, torch.from_numpy(all_ops_mask()).bool()), soft),
                distillation_loss(student(x, torch.from_numpy(mobilenetv2_mask()).bool()), soft)]
    student.zero_grad()
    losses, _ = sandwich_step(student, x, y, masks, teacher=leaf)
    assert leaf.grad is None
    assert losses == pytest.approx([e.item() for e in expected], rel=1e-5)
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())
    assert not teacher.model.training


def test_the_teachers_architecture(teachers, tmp_path):
    assert np.array_equal(teacher_mask(load_checkpoint(teachers["a"]), None), mobilenetv2_mask())
    assert np.array_equal(teacher_mask(load_checkpoint(teachers["b"]), None), single_op_mask(1))
    save_mask(tmp_path / "m.json", single_op_mask(3))
    assert np.array_equal(teacher_mask(load_checkpoint(teachers["b"]), tmp_path / "m.json"), single_op_mask(3))


def test_a_run_with_a_teacher_records_it_and_keeps_none_of_its_weights(fmnist_root, teachers, tmp_path, capsys):
    cfg = replace(_cfg(fmnist_root, tmp_path, teachers["a"]), epochs=1)
    train_supernet(cfg)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    record = ckpt["teacher"]
    assert record["sha256"] == file_sha256(teachers["a"]) and record["mask"] == mobilenetv2_mask().tolist()
    assert record["macs"] == tiny_supernet().space.macs(mobilenetv2_mask()) and 0 <= record["test_acc"] <= 1
    assert record["test_images"] == 32
    n_params = len(list(tiny_supernet().parameters()))
    assert len(ckpt["optimizer"]["param_groups"][0]["params"]) == n_params  # the student's only
    assert ckpt["model"].keys() == tiny_supernet().state_dict().keys()
    out = capsys.readouterr().out
    assert "teacher" in out and "test accuracy" in out and "img/s forward" in out and "MMACs" in out


@pytest.fixture(scope="module")
def uninterrupted(fmnist_root, teachers, tiny_assets, tmp_path_factory) -> tuple[TrainConfig, dict]:
    """A run with a teacher and probes, not interrupted: its settings and checkpoint."""
    full = _cfg(fmnist_root, tmp_path_factory.mktemp("full"), teachers["a"], tiny_assets["latency_table"])
    train_supernet(full)
    return full, load_checkpoint(f"{full.run.out}/last.pt")


@pytest.mark.parametrize("crash_at", [3, 5])
def test_a_run_resumed_from_any_checkpoint_ends_as_an_uninterrupted_one(uninterrupted, tmp_path, crash_at):
    """Killed after global step ``crash_at`` of 6 (the last checkpoint: the step before; step 3 ends
    the first epoch, whose end, probes included, is redone) and resumed."""
    full, a = uninterrupted
    cut = replace(full, run=replace(full.run, out=str(tmp_path)))
    with pytest.raises(Crash):
        train_supernet(cut, on_step=raise_at(crash_at, Crash))
    train_supernet(replace(cut, resume=True))
    b = load_checkpoint(tmp_path / "last.pt")
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert a["metrics"]["history"] == b["metrics"]["history"]
    assert set(a["metrics"]["history"][-1]["probes"]) >= {"mobilenetv2", "all_ops", "per_image_0.5"}
    assert (tmp_path / "probes.csv").read_text() == (Path(full.run.out) / "probes.csv").read_text()


def test_a_resume_with_another_teacher_is_refused(fmnist_root, teachers, tmp_path):
    cfg = replace(_cfg(fmnist_root, tmp_path, teachers["a"]), epochs=1)
    with pytest.raises(Crash):
        train_supernet(cfg, on_step=raise_at(2, Crash))
    with pytest.raises(ValueError, match="trained from teacher .*a.pt"):
        train_supernet(replace(cfg, teacher=teachers["b"], resume=True))
    with pytest.raises(ValueError, match="trained from teacher"):
        train_supernet(replace(cfg, teacher=None, resume=True))
    moved = tmp_path / "moved.pt"
    shutil.copy(teachers["a"], moved)
    train_supernet(replace(cfg, teacher=str(moved), resume=True))  # the same bytes elsewhere: resumed


@pytest.mark.parametrize(("change", "match"), [
    ({"mask_sampling": "mixed"}, "teacher"), ({"distill": False}, "teacher"),
    ({"teacher": None, "teacher_mask": "m.json"}, "teacher_mask"), ({"label_weight": 1.5}, "label_weight"),
    ({"distill_temperature": 0.0}, "distill_temperature"), ({"probe_images": -1}, "probe_images"),
])
def test_distillation_settings_are_checked(fmnist_root, teachers, tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        replace(_cfg(fmnist_root, tmp_path, teachers["a"]), **change)


def test_a_teacher_of_another_data_set_is_refused(fmnist_root, tmp_path):
    model = tiny_supernet()
    atomic_save(supernet_state(model, "cifar10"), tmp_path / "t.pt")
    with pytest.raises(ValueError, match="teacher .*t.pt"):
        Teacher(tmp_path / "t.pt", None, "fashion_mnist", model.space, torch.device("cpu"))
