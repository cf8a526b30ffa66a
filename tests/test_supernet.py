import numpy as np
import pytest
import torch

from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, one_op_masks, random_masks
from instanas_gym.space.search_space import MASK_SHAPE

from .conftest import tiny_supernet, trained_like


@pytest.fixture(scope="module")
def net():
    return trained_like(tiny_supernet())


@pytest.mark.parametrize("kind", ["mbv2", "one_op", "bernoulli", "sparse", "empty"])
@pytest.mark.parametrize("batch", [1, 7])
def test_masked_equals_dynamic(net, rng, kind, batch):
    masks = {
        "mbv2": np.broadcast_to(mobilenetv2_mask(), (batch, *MASK_SHAPE)),
        "one_op": one_op_masks(rng, batch),
        "bernoulli": random_masks(rng, batch, 0.5),
        "sparse": random_masks(rng, batch, 0.1),
        "empty": np.zeros((batch, *MASK_SHAPE), np.uint8),
    }[kind]
    x = torch.rand(batch, 1, 28, 28)
    with torch.no_grad():
        net.mode = "dynamic"
        dyn = net(x, masks)
        net.mode = "masked"
        masked = net(x, masks)
        net.mode = "dynamic"
    assert dyn.shape == (batch, 10)
    assert torch.isfinite(dyn).all()
    assert (dyn - masked).abs().max().item() <= 1e-4
    assert dyn.abs().max().item() > 1e-3  # outputs are not trivially zero


def test_fixed_mask_for_the_batch_equals_per_image_masks(net):
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        a = net(x, mobilenetv2_mask())
        b = net(x, np.broadcast_to(mobilenetv2_mask(), (5, *MASK_SHAPE)))
    torch.testing.assert_close(a, b)


def test_uint8_images_are_normalised_inside(net):
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(net(x, mobilenetv2_mask()), net(x.float() / 255, mobilenetv2_mask()))


def test_every_cell_shape(net):
    x = net.stem(net.preprocess(torch.rand(2, 1, 28, 28)))
    for cell, spec in zip(net.cells, net.space.cells):
        assert x.shape[1:] == (spec.in_channels, spec.in_size, spec.in_size)
        for op in cell.ops:
            assert op(x).shape[1:] == (spec.out_channels, spec.out_size, spec.out_size)
        x = cell.ops[0](x)


def test_empty_cells_are_identity_or_fallback(net):
    """An empty identity cell passes its input through; an empty stage opener runs the basic block."""
    x = torch.rand(2, net.space.cells[1].in_channels, 28, 28)
    cell = net.cells[1]
    assert not cell.spec.opens_stage
    assert torch.equal(cell.forward_dynamic(x, np.zeros((2, 5), bool)), x)
    opener = next(c for c in net.cells if c.spec.opens_stage)
    h = torch.rand(2, opener.spec.in_channels, opener.spec.in_size, opener.spec.in_size)
    with torch.no_grad():
        full = net(torch.rand(2, 1, 28, 28), np.zeros(MASK_SHAPE, np.uint8))
        eff = net.prepare_masks(np.zeros(MASK_SHAPE, np.uint8), 2)
        out = opener.forward_dynamic(h, eff[:, opener.spec.index].numpy())
        torch.testing.assert_close(out, opener.ops[4](h))
    assert torch.isfinite(full).all()


def test_bad_inputs(net):
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.rand(2, 3, 28, 28), mobilenetv2_mask())
    with pytest.raises(ValueError, match="got 3 masks for 2 images"):
        net(torch.rand(2, 1, 28, 28), np.ones((3, 17, 5), np.uint8))
    with pytest.raises(ValueError, match="0 or 1"):
        net(torch.rand(1, 1, 28, 28), np.full((17, 5), 3))
    with pytest.raises(ValueError, match="mode"):
        net.mode = "fast"


def test_dynamic_training_gradients_reach_only_selected_ops(rng):
    net = tiny_supernet().train()
    mask = mobilenetv2_mask()
    net(torch.rand(4, 1, 28, 28), mask).sum().backward()
    cell = net.cells[5]
    assert cell.ops[0][0][0].weight.grad is not None
    assert all(op[0][0].weight.grad is None for op in cell.ops[1:])


def test_params_count(net):
    assert net.params(all_ops_mask()) == sum(p.numel() for p in net.parameters())
    assert net.params(mobilenetv2_mask()) < net.params(all_ops_mask())


@pytest.mark.parametrize("grad", [False, True])
def test_dynamic_cells_keep_channels_last(rng, grad):
    net = trained_like(tiny_supernet()).to(memory_format=torch.channels_last).eval()
    x = torch.rand(6, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    masks = net.prepare_masks(random_masks(rng, 6, 0.5), 6).numpy()
    with torch.set_grad_enabled(grad):
        h = net.stem(net.preprocess(x))
        for c, cell in enumerate(net.cells):
            h = cell.forward_dynamic(h, masks[:, c])
            assert h.is_contiguous(memory_format=torch.channels_last), f"cell {c} returned another layout"
        want = net(x.contiguous(), masks)
    net.mode = "masked"
    with torch.no_grad():
        assert (net(x, masks) - want).abs().max().item() <= 1e-4
