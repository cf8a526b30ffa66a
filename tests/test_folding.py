import numpy as np
import pytest
import torch

from instanas_gym.model.batchnorm import FoldedConvs, fold_batchnorm
from instanas_gym.space.masks import mobilenetv2_mask, one_op_masks, random_masks
from instanas_gym.space.search_space import MASK_SHAPE

from .conftest import tiny_supernet, trained_like


@pytest.fixture(scope="module")
def pair():
    net = trained_like(tiny_supernet())
    return net, fold_batchnorm(net)


@pytest.mark.parametrize("mode", ["dynamic", "masked"])
def test_folded_copy_matches_the_original(pair, rng, mode):
    net, folded = pair
    x = torch.rand(9, 1, 28, 28)
    for masks in (one_op_masks(rng, 9), random_masks(rng, 9, 0.5), np.zeros((9, *MASK_SHAPE), np.uint8), mobilenetv2_mask()):
        net.mode = folded.mode = mode
        with torch.inference_mode():
            want, got = net(x, masks), folded(x, masks)
        assert (want - got).abs().max().item() <= 1e-4
        assert want.abs().max().item() > 1e-3
    net.mode = folded.mode = "dynamic"


def test_every_conv_bn_is_folded_and_the_original_is_untouched(pair):
    net, folded = pair
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(isinstance(op, FoldedConvs) for cell in folded.cells for op in cell.ops)
    assert isinstance(folded.stem, FoldedConvs) and isinstance(folded.head, FoldedConvs)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    # the copy does not share storage: changing the original leaves it as folded
    x = torch.rand(2, 1, 28, 28)
    with torch.inference_mode():
        before = folded(x, mobilenetv2_mask())
    other = trained_like(tiny_supernet(seed=3))
    with torch.no_grad():
        net.cells[0].ops[0][0][0].weight.copy_(other.cells[0].ops[0][0][0].weight)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x, mobilenetv2_mask()), before)


def test_folded_copy_refuses_training(pair):
    _, folded = pair
    folded.train()
    try:
        with pytest.raises(RuntimeError, match="inference only"):
            folded(torch.rand(2, 1, 28, 28), mobilenetv2_mask())
    finally:
        folded.eval()
