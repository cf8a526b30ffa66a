"""The architecture family: its file, the K-way action wrappers, and lookup mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from instanas_gym.family import FAMILY_FORMAT, ArchitectureFamily, load_family, save_family
from instanas_gym.files import FileFormatError
from instanas_gym.masks import all_ops_mask, mobilenetv2_mask, single_op_mask
from instanas_gym.samplers import random_masks


def small_family(k: int = 4, seed: int = 0, **kwargs) -> ArchitectureFamily:
    masks = np.concatenate([mobilenetv2_mask()[None], random_masks(np.random.default_rng(seed), k - 1, min_ops=1)])
    return ArchitectureFamily(masks, **kwargs)


# ---- the file ------------------------------------------------------------------------------------
def test_family_file_round_trip(tmp_path):
    fam = small_family(3, names=("mbv2", "a", "b"), latency_ms=[0.3, 0.2, 0.1], dataset="fashion_mnist",
                       supernet="x/last.pt", meta={"table": "t.json", "ks": [0, 1]})
    save_family(tmp_path / "f.json", fam)
    back = load_family(tmp_path / "f.json")
    np.testing.assert_array_equal(back.masks, fam.masks)
    assert back.masks.dtype == np.uint8 and back.k == len(back) == 3
    assert back.names == ("mbv2", "a", "b") and back.latency_ms.tolist() == [0.3, 0.2, 0.1]
    assert (back.dataset, back.supernet, back.meta) == ("fashion_mnist", "x/last.pt", {"table": "t.json", "ks": [0, 1]})
    assert json.loads((tmp_path / "f.json").read_text())["format"] == FAMILY_FORMAT
    assert not list(tmp_path.glob("*.tmp"))
    plain = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask()]))
    save_family(tmp_path / "g.json", plain)
    back = load_family(tmp_path / "g.json")
    assert back.names == ("arm 0", "arm 1") and back.latency_ms is None and back.supernet is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"masks": np.zeros((0, 17, 5), np.uint8)}, "K >= 1"),
        ({"masks": np.zeros((2, 17, 4), np.uint8)}, "masks must have shape"),
        ({"masks": np.stack([mobilenetv2_mask()] * 2)}, "arm 1 repeats arm 0"),
        ({"masks": np.stack([mobilenetv2_mask(), all_ops_mask()]), "names": ("one",)}, "names: 2 strings"),
        ({"masks": np.stack([mobilenetv2_mask(), all_ops_mask()]), "latency_ms": [1.0, float("nan")]}, "latency_ms"),
    ],
)
def test_family_checks_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ArchitectureFamily(**kwargs)


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_family_file_errors_name_the_file_and_field(tmp_path):
    good = small_family(2).to_dict()
    with pytest.raises(FileNotFoundError, match="no architecture family file"):
        load_family(tmp_path / "missing.json")
    bad = _write(tmp_path / "fmt.json", good | {"format": "instanas-mask-v1"})
    with pytest.raises(FileFormatError, match=r"fmt\.json: field 'format'"):
        load_family(bad)
    bad = _write(tmp_path / "empty.json", good | {"arms": []})
    with pytest.raises(FileFormatError, match=r"empty\.json: field 'arms' must be a list of K >= 1"):
        load_family(bad)
    arms = [dict(a) for a in good["arms"]]
    arms[1]["mask"] = arms[1]["mask"][:16]
    with pytest.raises(FileFormatError, match=r"shape\.json: field 'arms\[1\]\.mask' must have shape"):
        load_family(_write(tmp_path / "shape.json", good | {"arms": arms}))
    arms = [good["arms"][0], good["arms"][0]]
    with pytest.raises(FileFormatError, match=r"dup\.json: field masks: arm 1 repeats arm 0"):
        load_family(_write(tmp_path / "dup.json", good | {"arms": arms}))
    arms = [dict(good["arms"][0], latency_ms=0.1), good["arms"][1]]
    with pytest.raises(FileFormatError, match=r"lat\.json: field 'arms\[\*\]\.latency_ms'"):
        load_family(_write(tmp_path / "lat.json", good | {"arms": arms}))
