"""The outcomes store: single architectures' answers computed once, kept beside the supernet, read back
as computed, recomputed when the supernet or the data changed, refused by name when damaged, never
written inside the installed package, and equal to what the live environment answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instanas_gym.agents.router_file import resolve_family
from instanas_gym.envs.config import EnvConfig
from instanas_gym.model import outcomes as outcomes_module
from instanas_gym.model.checkpoint import load_supernet, supernet_state
from instanas_gym.model.outcomes import (
    OUTCOMES_FORMAT,
    OutcomeStore,
    outcomes_key,
    outcomes_path,
    read_outcomes,
    shipped_outcomes_path,
    write_outcomes,
)
from instanas_gym.space.data import load_split
from instanas_gym.space.family import load_family, probe_masks
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, random_masks
from instanas_gym.utils.files import FileFormatError, atomic_save
from instanas_gym.utils.paths import ASSETS, BUNDLED_CASCADE_FAMILY, BUNDLED_SUPERNET
from tests.fixtures import write_fashion_mnist

from .conftest import env_config, own_copy, tiny_supernet

MASKS = np.concatenate([np.stack([mobilenetv2_mask(), all_ops_mask()]),
                        random_masks(np.random.default_rng(3), 3, min_ops=1)])


@pytest.fixture
def runs(monkeypatch) -> list[int]:
    """One entry per supernet pass over the images (an architecture's answers, or the all-ops loss)."""
    calls: list[int] = []
    answers = outcomes_module.answers
    monkeypatch.setattr(outcomes_module, "answers", lambda *a, **k: calls.append(1) or answers(*a, **k))
    return calls


@pytest.fixture
def store_of(trained_assets, tmp_path):
    """A function of (split, n, other store settings) giving a store of a copy of the trained supernet
    in ``tmp_path`` (its outcomes file is this test's own)."""
    kwargs = own_copy(trained_assets, tmp_path)

    def make(split: str = "test", **store: object) -> OutcomeStore:
        bandit = env_config(kwargs).bandit(split)
        return bandit.outcome_store(progress=False, **store)

    return make


def test_answers_are_stored_beside_the_supernet_and_read_back_without_running(store_of, tmp_path, runs):
    first = store_of().get(MASKS, 40)
    assert len(runs) == len(MASKS) + 1  # each architecture, then the all-ops loss
    path = tmp_path / "last_outcomes_test.npz"
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    store = store_of()
    again = store.get(MASKS[::-1], 40)
    assert len(runs) == len(MASKS) + 1  # nothing ran again
    np.testing.assert_array_equal(again.prediction, first.prediction[::-1])
    np.testing.assert_array_equal(again.confidence, first.confidence[::-1])
    np.testing.assert_array_equal(again.probs, first.probs[::-1])
    np.testing.assert_array_equal(store.loss(40), store_of().loss(40))
    assert first.correct.shape == (len(MASKS), 40) and first.correct.dtype == bool
    assert np.allclose(first.probs.astype(np.float32).sum(-1), 1, atol=1e-2)
    np.testing.assert_allclose(first.confidence, first.probs.max(-1), atol=1e-3)
    assert len(store.stored_masks()) == len(MASKS)
    fewer = store_of().get(MASKS[:2], 16)  # fewer images: read, not run
    assert len(runs) == len(MASKS) + 1
    np.testing.assert_array_equal(fewer.prediction, first.prediction[:2, :16])
    store_of(rebuild=True).get(MASKS[:1], 40)  # rebuild: computed again whatever the file holds
    assert len(runs) == len(MASKS) + 3


def test_masks_with_the_same_effective_architecture_share_one_row(store_of, runs):
    """An empty stage-opening cell runs its basic block: the mask with it spelled out is the same
    architecture, stored once."""
    empty = mobilenetv2_mask().copy()
    empty[3] = 0  # cell 3 opens a stage (the tiny space's first stride)
    spelled = empty.copy()
    spelled[3, 4] = 1
    out = store_of().get(np.stack([empty, spelled]), 20)
    assert len(runs) == 2  # one architecture and the loss
    np.testing.assert_array_equal(out.prediction[0], out.prediction[1])
    np.testing.assert_array_equal(out.masks[0], spelled)


def test_a_new_architecture_after_a_longer_read_is_stored_for_as_many_images(store_of, tmp_path, runs):
    """Rows of one file cover the same images: an architecture added while the file holds more images
    than asked for is computed on all of them."""
    store_of().get(MASKS[:2], 64)
    added = store_of().get(MASKS[2:3], 16)
    arrays, n = read_outcomes(tmp_path / "last_outcomes_test.npz", None)
    assert n == 64 and arrays["prediction"].shape == (3, 64)
    assert added.prediction.shape == (1, 16)
    np.testing.assert_array_equal(arrays["prediction"][2, :16], added.prediction[0])


def test_more_images_than_stored_recompute_every_kept_architecture(store_of, tmp_path, runs):
    store_of().get(MASKS[:2], 16)
    assert len(runs) == 3
    store_of().get(MASKS[2:3], 32)
    assert len(runs) == 3 + 3 + 1  # the two kept again, the new one, the loss
    arrays, n = read_outcomes(tmp_path / "last_outcomes_test.npz", None)
    assert n == 32 and arrays["masks"].shape == (3, 17, 5)


def test_the_stored_answers_equal_the_live_environments(trained_assets, tmp_path):
    """What lookup mode and judging read is what the environment computes at every step."""
    bandit = env_config(own_copy(trained_assets, tmp_path)).bandit("train")
    stored = bandit.outcome_store(progress=False).get(MASKS, 96)
    indices = np.arange(96)
    for m, mask in enumerate(MASKS):
        live = bandit.evaluate(indices, np.broadcast_to(mask, (96, 17, 5)))
        np.testing.assert_array_equal(stored.prediction[m], live["prediction"])
        np.testing.assert_array_equal(stored.correct[m], live["correct"])
        np.testing.assert_allclose(stored.confidence[m], live["confidence"], rtol=1e-5)  # kept as float32


def test_a_file_of_another_supernet_or_other_data_is_recomputed_and_replaced(trained_assets, tmp_path, runs):
    kwargs = own_copy(trained_assets, tmp_path / "net")
    env = env_config(kwargs)
    env.bandit("test").outcome_store(progress=False).get(MASKS[:2], 32)
    path = tmp_path / "net" / "last_outcomes_test.npz"
    key = json.loads(str(np.load(path)["key"]))
    # the checkpoint replaced at the same path (the environments cache a loaded supernet by path and time)
    atomic_save(supernet_state(tiny_supernet(seed=5), "fashion_mnist"), kwargs["supernet"])
    other = env.bandit("test")
    assert other.outcome_store(progress=False).get(MASKS[:2], 32).prediction.shape == (2, 32)
    assert len(runs) == 3 + 3
    replaced = json.loads(str(np.load(path)["key"]))
    assert replaced["supernet_sha256"] != key["supernet_sha256"] and replaced["data_sha256"] == key["data_sha256"]
    # the same checkpoint on other images of the same split
    root = write_fashion_mnist(tmp_path / "other_data", n_train=64, n_test=48, seed=1)
    moved = env_config(kwargs | {"data_root": str(root)}).bandit("test")
    assert moved.outcome_store(progress=False).get(MASKS[:2], 32).prediction.shape == (2, 32)
    assert len(runs) == 3 + 3 + 3
    again = json.loads(str(np.load(path)["key"]))
    assert again["data_sha256"] != replaced["data_sha256"] and again["images"] == 48


def _arrays(path: Path) -> tuple[dict, dict]:
    with np.load(path) as f:
        return json.loads(str(f["key"])), {name: f[name] for name in ("masks", "prediction", "confidence", "probs", "loss")}


@pytest.mark.parametrize("damage, message", [
    ("junk bytes", "is not an outcomes file"),
    ("no key", "not a readable outcomes file"),
    ("other format", "not an outcomes file of format"),
    ("prediction out of range", r"a prediction is outside \[0, 10\)"),
    ("nan confidence", "not finite"),
    ("negative loss", "loss is negative"),
    ("short prediction", r"prediction, confidence \(2, 24\)"),
    ("mask of 2s", "masks hold values other than 0 and 1"),
    ("scored beyond the split", "scored_images"),
])
def test_a_damaged_file_raises_naming_it(store_of, tmp_path, damage, message):
    store_of().get(MASKS[:2], 24)
    path = tmp_path / "last_outcomes_test.npz"
    key, a = _arrays(path)
    if damage == "junk bytes":
        path.write_bytes(b"not an outcomes file")
    elif damage == "no key":
        np.savez(path, **a)
    else:
        if damage == "other format":
            key["format"] = "instanas-scores-v1"
        elif damage == "prediction out of range":
            a["prediction"][1, 3] = 99
        elif damage == "nan confidence":
            a["confidence"][0, 0] = np.nan
        elif damage == "negative loss":
            a["loss"][5] = -1.0
        elif damage == "short prediction":
            a["prediction"] = a["prediction"][:, :20]
        elif damage == "mask of 2s":
            a["masks"][0, 0, 0] = 2
        else:
            key["scored_images"] = 10**6
        write_outcomes(path, key, **a)
    with pytest.raises(FileFormatError, match=message) as err:
        store_of()
    assert str(path) in str(err.value)


def test_stored_files_hold_no_pickled_objects(store_of, tmp_path):
    store_of().get(MASKS[:2], 8)
    with np.load(tmp_path / "last_outcomes_test.npz", allow_pickle=False) as f:
        assert sorted(f.files) == ["confidence", "key", "loss", "masks", "prediction", "probs"]
        assert json.loads(str(f["key"]))["format"] == OUTCOMES_FORMAT


def test_nothing_is_ever_written_inside_the_installed_package(isolated_cache, monkeypatch):
    """The bundled supernet's answers go to $INSTANAS_CACHE/outcomes/; the shipped file (if any) is only
    read. (Where the answers go is the point, not what they are: the new row's are made up, at once.)"""

    def made_up(model, data, mask, batch_size, n):
        return {"prediction": np.zeros(n, np.int64), "confidence": np.full(n, 0.5), "probs": np.full((n, 10), 0.1),
                "loss": np.ones(n)}

    monkeypatch.setattr(outcomes_module, "answers", made_up)
    before = {p: p.stat().st_mtime_ns for p in ASSETS.rglob("*")}
    model, _ = load_supernet(BUNDLED_SUPERNET)
    test = load_split("fashion_mnist", "test")
    store = OutcomeStore(model, BUNDLED_SUPERNET, test, progress=False)
    assert store.path == isolated_cache / "outcomes" / "supernet_fashion_mnist_outcomes_test.npz"
    mask = random_masks(np.random.default_rng(123), 1, min_ops=1)  # in no shipped file
    out = store.get(mask, 8)
    assert out.prediction.shape == (1, 8) and store.path.is_file()
    assert {p: p.stat().st_mtime_ns for p in ASSETS.rglob("*")} == before
    assert outcomes_path(BUNDLED_SUPERNET, "test").parent == isolated_cache / "outcomes"
    assert shipped_outcomes_path(BUNDLED_SUPERNET, "test").parent == ASSETS


def test_a_store_without_a_file_keeps_its_answers_in_memory(trained_assets, tmp_path, runs):
    folder = tmp_path / "net"
    kwargs = own_copy(trained_assets, folder)
    model, _ = load_supernet(kwargs["supernet"])
    data = env_config(kwargs).bandit("test").data
    store = OutcomeStore(model, None, data, progress=False)
    store.get(MASKS[:2], 16)
    store.get(MASKS[:2], 16)
    assert len(runs) == 3 and store.path is None and sorted(p.name for p in folder.iterdir()) == ["last.pt"]
    with pytest.raises(ValueError, match="statistics"):
        OutcomeStore(model, None, data, statistics="mine")


# ---- the bundled supernet's shipped outcomes -------------------------------------------------------
def _shipped(split: str) -> Path:
    path = shipped_outcomes_path(BUNDLED_SUPERNET, split)
    if not path.is_file():
        pytest.skip(f"{path.name} is not in the package yet (instanas-gym compute-outcomes writes it)")
    return path


def test_the_bundled_supernet_ships_its_probes_and_familys_answers_on_the_test_split(runs):
    """What the README's first command judges against is stored for all 10,000 test images and
    matches the bundled supernet and data: judging runs none of them again."""
    path = _shipped("test")
    bandit = EnvConfig().bandit("test")
    probes = np.stack([m for _, m in probe_masks(bandit.table, seed=0)])
    family, _ = resolve_family(None, "fashion_mnist")
    arrays, n = read_outcomes(path, outcomes_key(BUNDLED_SUPERNET, bandit.data))
    assert n == bandit.num_images == 10_000
    store = bandit.outcome_store(progress=False)
    store.get(np.concatenate([probes, family.masks]))
    store.loss()
    assert not runs and not store.path.exists()  # all read from the shipped file; nothing written


def test_the_bundled_families_ship_their_answers_on_the_search_split(runs):
    """Lookup mode over the bundled family (``train-reinforce family``) and the bundled cascade family
    (``train-reinforce cascade``, the first command) starts without running the supernet."""
    _shipped("search")
    bandit = EnvConfig().bandit("search")
    family, _ = resolve_family(None, "fashion_mnist")
    cascade = load_family(BUNDLED_CASCADE_FAMILY)
    store = bandit.outcome_store(progress=False)
    store.get(np.concatenate([family.masks, cascade.masks]))
    assert not runs and not store.path.exists()


def test_the_bundled_supernet_ships_its_pool_frontier_and_the_cascade_references(runs, monkeypatch):
    """Judging a cascade on the bundled default (the first command) scores no pool and no reference
    architecture again: the pool's frontier and every reference's test answers ship."""
    from instanas_gym.judge import pool as pool_module
    from instanas_gym.judge.cascade import references

    _shipped("test")
    monkeypatch.setattr(pool_module.OutcomeStore, "get", lambda *a, **k: pytest.fail("the pool was scored again"))
    names, masks = pool_module.pool_frontier(EnvConfig().bandit("search"))
    test = EnvConfig().bandit("test")
    monkeypatch.undo()
    refs = references(test, load_family(BUNDLED_CASCADE_FAMILY), (names, masks))
    assert refs["correct"].shape[1] == 10_000 and not runs


def test_the_obsolete_score_files_are_gone():
    for name in ("family_fashion_mnist_outcomes_search.npz", "supernet_fashion_mnist_scores_test.npz"):
        if (ASSETS / name).exists():
            pytest.skip(f"{name} (an obsolete format) still ships; the new outcomes files replace it")
    assert not list(ASSETS.glob("*_scores_*.npz"))
