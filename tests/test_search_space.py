from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from instanas_gym.latency.table import LatencyTable
from instanas_gym.space.masks import (
    all_ops_mask,
    flatten_mask,
    load_mask,
    mask_counts,
    mobilenetv2_mask,
    one_op_masks,
    random_masks,
    save_mask,
    unflatten_mask,
    validate_mask,
)
from instanas_gym.space.search_space import MASK_SHAPE, SearchSpace, _make_divisible
from instanas_gym.utils.paths import BUNDLED_LATENCY_TABLE


def test_table_reads_like_the_paper():
    space = SearchSpace(1.0, 32, 3, 10)
    assert len(space.cells) == 17
    assert [c.out_channels for c in space.cells] == [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]
    assert [c.stride for c in space.cells].count(2) == 3
    assert space.final_size == 4
    assert space.opens_stage.tolist() == [c.stride != 1 or c.in_channels != c.out_channels for c in space.cells]


def test_width_multiplier_is_divisible_by_8():
    space = SearchSpace(0.25, 28, 1, 10)
    assert all(c.out_channels % 8 == 0 for c in space.cells)
    assert space.stem_channels == _make_divisible(32 * 0.25) == 8
    assert space.head_channels == 1280


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((17, 4), np.uint8), r"shape \(17, 5\)"),
        (np.zeros(85, np.uint8), r"shape \(17, 5\)"),
        (np.zeros((17, 5), np.float32), "dtype"),
        (np.full((17, 5), 2, np.uint8), "0 or 1"),
        (-np.ones((17, 5), np.int64), "0 or 1"),
    ],
)
def test_validate_mask_errors_name_what_is_expected(bad, message):
    with pytest.raises(ValueError, match=message):
        validate_mask(bad)


def test_validate_mask_accepts_bool_int_and_tensors():
    m = mobilenetv2_mask()
    for variant in (m.astype(bool), m.astype(np.int8), torch.from_numpy(m)):
        assert validate_mask(variant).dtype == np.uint8
    assert validate_mask(np.stack([m, m]), batched=True).shape == (2, 17, 5)
    with pytest.raises(ValueError, match=r"\(B, 17, 5\)"):
        validate_mask(m, batched=True)


def test_flatten_round_trip(rng):
    masks = random_masks(rng, 4)
    flat = flatten_mask(masks)
    assert flat.shape == (4, 85)
    np.testing.assert_array_equal(unflatten_mask(flat), masks)
    np.testing.assert_array_equal(flatten_mask(masks[0]), masks[0].reshape(-1))
    with pytest.raises(ValueError, match="85"):
        unflatten_mask(np.zeros(84))


def test_mask_generators(rng):
    assert mobilenetv2_mask().sum() == 17 and all_ops_mask().sum() == 85
    assert (one_op_masks(rng, 10).sum(-1) == 1).all()
    assert (random_masks(rng, 50, 0.1, min_ops=1).sum(-1) >= 1).all()


def test_effective_mask_adds_fallback_only_in_stage_opening_cells():
    space = SearchSpace(0.25, 28, 1, 10)
    empty = np.zeros(MASK_SHAPE, np.uint8)
    eff = space.effective_mask(empty)
    assert eff[:, 4].tolist() == space.opens_stage.tolist()
    assert eff[:, :4].sum() == 0
    assert (space.effective_mask(mobilenetv2_mask()) == mobilenetv2_mask().astype(bool)).all()


def _hook_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * k * module.in_channels // module.groups
        elif isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("width, size, channels", [(1.0, 32, 3), (0.25, 28, 1), (0.5, 32, 3)])
def test_mobilenetv2_macs_match_torchvision(width, size, channels):
    """Our analytic MACs of the MobileNetV2 path equal forward-hook MACs of torchvision's MobileNetV2."""
    setting = [[6, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
    ref = torchvision.models.MobileNetV2(num_classes=10, width_mult=width, inverted_residual_setting=setting)
    stem = _make_divisible(32 * width)
    ref.features[0] = torchvision.ops.Conv2dNormActivation(channels, stem, stride=1, activation_layer=torch.nn.ReLU6)
    ref.eval()
    space = SearchSpace(width, size, channels, 10)
    assert space.macs(mobilenetv2_mask()) == _hook_macs(ref, torch.zeros(1, channels, size, size))


def test_macs_and_params_grow_with_ops(rng):
    space = SearchSpace(0.25, 28, 1, 10)
    assert space.macs(all_ops_mask()) > space.macs(mobilenetv2_mask()) > space.macs(np.zeros(MASK_SHAPE, np.uint8))
    batch = random_masks(rng, 3)
    assert space.macs(batch).tolist() == [space.macs(m) for m in batch]


def test_mask_files_round_trip_and_refuse_bad_input(tmp_path, rng):
    mask = random_masks(rng, 1, 0.4)[0]
    save_mask(tmp_path / "m.json", mask)
    assert np.array_equal(load_mask(tmp_path / "m.json"), mask)
    np.save(tmp_path / "m.npy", mask.astype(bool))
    assert np.array_equal(load_mask(tmp_path / "m.npy"), mask)
    with pytest.raises(FileNotFoundError, match="no mask file"):
        load_mask(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"mask": [[1]]}')
    with pytest.raises(ValueError, match="instanas-mask-v1"):
        load_mask(tmp_path / "other.json")
    with pytest.raises(ValueError, match=r"\(17, 5\)"):
        save_mask(tmp_path / "bad.json", np.ones((17, 4), np.uint8))


def test_mask_counts_orders_distinct_masks_by_use(rng):
    a, b, c = random_masks(rng, 3, 0.5)
    distinct, counts = mask_counts(np.stack([b, a, b, c, b, a]))
    assert counts.tolist() == [3, 2, 1]
    assert [m.tolist() for m in distinct] == [b.tolist(), a.tolist(), c.tolist()]
    assert distinct.dtype == np.uint8 and distinct.shape == (3, *MASK_SHAPE)
    with pytest.raises(ValueError, match=r"\(B, 17, 5\)"):
        mask_counts(a)


def test_kept_benchmark_masks_load_and_cost_what_the_benchmarks_say():
    """benchmarks/masks/ holds the masks benchmarks/README.md retrains; their bundled-table latency is quoted there."""
    table = LatencyTable.load(BUNDLED_LATENCY_TABLE)
    mask = load_mask(Path(__file__).resolve().parents[1] / "benchmarks/masks/ub_end_1.0_seed3.json")
    assert round(float(table.network_ms(mask)), 3) == 1.268
    assert round(float(table.network_ms(mobilenetv2_mask())), 3) == 2.162
