import numpy as np
import pytest
import torch

from instanas_gym.space import data
from instanas_gym.space.data import DataNotFoundError, augment, get_spec, load_split, read_idx_pair
from tests.fixtures import skip_cifar_checksums, write_cifar, write_fashion_mnist


@pytest.mark.parametrize("dataset, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loads_through_torchvision(tmp_path, dataset, classes):
    write_cifar(tmp_path, dataset, n_train=50, n_test=20)
    with skip_cifar_checksums():
        train = load_split(dataset, "train", tmp_path)
        test = load_split(dataset, "test", tmp_path)
    assert train.images.shape == (50, 32, 32, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (20, 32, 32, 3)
    assert train.labels.dtype == np.int64 and train.labels.max() < classes
    assert train.source.startswith("torchvision")


def test_cifar_checksums_are_checked_without_the_bypass(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=10, n_test=10)
    with pytest.raises(DataNotFoundError, match="download=True"):
        load_split("cifar10", "train", tmp_path)


def test_missing_cifar_says_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"download=True.*INSTANAS_DATA"):
        load_split("cifar100", "test", tmp_path / "nothing")


def test_fashion_mnist_torchvision_layout(tmp_path):
    write_fashion_mnist(tmp_path, n_train=30, n_test=20)
    train = load_split("fashion_mnist", "train", tmp_path)
    assert train.images.shape == (30, 28, 28, 1) and train.source.startswith("torchvision")
    np.testing.assert_array_equal(read_idx_pair(tmp_path / "debian", "train")[0], train.images)


def test_data_root_from_environment(tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path, n_train=30, n_test=20)
    monkeypatch.setenv("INSTANAS_DATA", str(tmp_path))
    assert load_split("fashion_mnist", "test").images.shape == (20, 28, 28, 1)


def test_fashion_mnist_debian_layout_and_missing(tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path, n_train=30, n_test=20)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.delenv("INSTANAS_DATA", raising=False)
    assert load_split("fashion_mnist", "train").source.startswith("debian")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "none")
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_split("fashion_mnist", "train")


def test_bundled_search_and_test_splits():
    search = load_split("fashion_mnist", "search")
    assert search.images.shape == (10_000, 28, 28, 1)
    assert np.bincount(search.labels).min() > 800  # roughly balanced
    test = load_split("fashion_mnist", "test")
    assert len(test) == 10_000


def test_bad_dataset_or_split():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_split("mnist", "train")
    with pytest.raises(ValueError, match="splits"):
        load_split("cifar10", "search")


def test_augment_keeps_shape_and_dtype_and_changes_images():
    images = torch.randint(1, 255, (16, 3, 32, 32), dtype=torch.uint8)
    out = augment(images, get_spec("cifar10"), torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)
    assert (out == 0).sum() >= 16 * 3 * 8 * 8  # cutout zeroes at least a quarter of a 16x16 square per image
