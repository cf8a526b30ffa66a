import numpy as np
import pytest
import torch

from instanas_gym.model.batchnorm import fold_batchnorm
from instanas_gym.model.parallel import ProcessPool
from instanas_gym.space.masks import mobilenetv2_mask, one_op_masks, random_masks
from instanas_gym.space.search_space import MASK_SHAPE

from .conftest import tiny_supernet, trained_like


@pytest.fixture(scope="module")
def net():
    return trained_like(tiny_supernet()).eval()


@pytest.fixture(scope="module")
def pool(net):
    with ProcessPool(net, workers=2) as p:
        yield p


def reference(net, x, masks, mode="dynamic"):
    net.mode = mode
    with torch.inference_mode():
        out = net(x, masks)
    net.mode = "dynamic"
    return out


def test_pool_matches_the_model_for_every_mask_kind_and_batch_size(pool, net, rng):
    # 7 images split 4 + 3, 1 image goes to one worker; then a larger batch grows the shared buffers
    for batch in (7, 1, 2, 20):
        x = torch.rand(batch, 1, 28, 28)
        for masks in (one_op_masks(rng, batch), random_masks(rng, batch, 0.5),
                      np.zeros((batch, *MASK_SHAPE), np.uint8), mobilenetv2_mask()):
            want = reference(net, x, masks)
            got = pool(x, masks)
            assert got.shape == want.shape
            assert (got - want).abs().max().item() <= 1e-4
            assert want.abs().max().item() > 1e-3


def test_pool_takes_uint8_images_and_runs_the_requested_mode(net, rng):
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    masks = random_masks(rng, 5, 0.5)
    with ProcessPool(fold_batchnorm(net), workers=2, mode="masked") as p:
        assert p.mode == "masked"
        assert (p(x, masks) - reference(net, x, masks, "masked")).abs().max().item() <= 1e-4


def test_pool_holds_a_snapshot_of_the_weights(net, pool):
    x = torch.rand(3, 1, 28, 28)
    before = pool(x, mobilenetv2_mask())
    other = trained_like(tiny_supernet(seed=5))
    with torch.no_grad():
        saved = [p.clone() for p in net.parameters()]
        for p, q in zip(net.parameters(), other.parameters()):
            p.copy_(q)
        try:
            assert torch.equal(pool(x, mobilenetv2_mask()), before)
        finally:
            for p, s in zip(net.parameters(), saved):
                p.copy_(s)


def test_bad_input_is_refused_before_reaching_the_workers(pool):
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        pool(torch.rand(2, 3, 28, 28), mobilenetv2_mask())
    with pytest.raises(ValueError, match="got 3 masks for 2 images"):
        pool(torch.rand(2, 1, 28, 28), np.ones((3, *MASK_SHAPE), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        pool(torch.rand(2, 1, 28, 28), np.ones((17, 4), np.uint8))


def test_a_worker_error_is_raised_in_the_caller_and_the_pool_keeps_working(pool, net):
    with pytest.raises(RuntimeError, match="ProcessPool worker failed"):
        pool(torch.rand(4, 1, 28, 28, dtype=torch.float64), mobilenetv2_mask())  # float32 weights
    x = torch.rand(4, 1, 28, 28)
    assert (pool(x, mobilenetv2_mask()) - reference(net, x, mobilenetv2_mask())).abs().max().item() <= 1e-4


def test_closed_pool_refuses_work_and_stops_its_processes(net):
    p = ProcessPool(net, workers=1)
    processes = list(p._processes)
    p.close()
    assert not any(proc.is_alive() for proc in processes)
    with pytest.raises(RuntimeError, match="closed"):
        p(torch.rand(1, 1, 28, 28), mobilenetv2_mask())
    with pytest.raises(ValueError, match="workers"):
        ProcessPool(net, workers=0)
