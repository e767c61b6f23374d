"""DataModules: Fashion-MNIST from its IDX files, splits, batch augmentation, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.data import FashionMNISTDataModule, ImageFolderDataModule
from tasks.data.base import split_indices, subset_indices
from tasks.data.idx import read_idx, write_idx
from tasks.data.tensor_dataset import CropFlip, TensorImageDataset
from tests.conftest import needs_fashion_mnist
from zoo.errors import ConfigError, DatasetNotFoundError
from zoo.registries import DATA


def fake_fashion_mnist(root, n_train=60, n_test=20, gz=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n, dtype=np.uint8) % 10)
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    array = np.random.default_rng(1).integers(0, 256, (5, 3, 4), dtype=np.uint8)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array)
    np.testing.assert_array_equal(read_idx(path), array)
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_fashion_mnist_from_root_shapes_splits_and_normalisation(tmp_path):
    dm = FashionMNISTDataModule(root=str(fake_fashion_mnist(tmp_path)), batch_size=8, val_size=12)
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (48, 12, 20)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 1, 28, 28) and labels.dtype == torch.int64
    x, _ = dm.on_after_batch_transfer((images, labels), 0)
    assert x.dtype == torch.float32 and x.shape == (8, 1, 28, 28)
    expected = (images.float() / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(x, expected)
    assert len(dm.train_dataloader()) == 6  # drop_last on training batches


def test_in_chans_and_image_size_conversion(tmp_path):
    dm = FashionMNISTDataModule(root=str(fake_fashion_mnist(tmp_path)), in_chans=3, image_size=32)
    x = dm.normalize(torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8))
    assert x.shape == (2, 3, 32, 32)
    torch.testing.assert_close(x[:, 0], x[:, 2])
    with pytest.raises(ConfigError, match="in_chans"):
        FashionMNISTDataModule(in_chans=2)


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    dm = FashionMNISTDataModule(root=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        dm.setup("fit")
    assert "data.root" in str(info.value)


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(100, 0.2, seed=3)
    assert len(val) == 20 and len(train) == 80
    assert sorted(torch.cat([train, val]).tolist()) == list(range(100))
    assert torch.equal(split_indices(100, 0.2, seed=3)[1], val)
    assert not torch.equal(split_indices(100, 0.2, seed=4)[1], val)
    with pytest.raises(ConfigError, match="val_size"):
        split_indices(10, 10, seed=0)


def test_train_subset_is_a_seeded_part_of_the_training_split(tmp_path):
    """data.train_subset: a count or a fraction of the training split (validation and test stay whole), the same
    images in every run with the same split_seed; bad values name the key."""
    root = str(fake_fashion_mnist(tmp_path))
    dm = FashionMNISTDataModule(root=root, val_size=12, train_subset=10)
    dm.setup("fit")
    full = FashionMNISTDataModule(root=root, val_size=12)
    full.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (10, 12) and torch.equal(dm.val_set.labels, full.val_set.labels)
    train_idx, _ = split_indices(60, 12, seed=0)
    chosen = subset_indices(train_idx, 10, seed=0)
    assert set(chosen.tolist()) <= set(train_idx.tolist()) and torch.equal(chosen, subset_indices(train_idx, 10, 0))
    assert not torch.equal(chosen, subset_indices(train_idx, 10, seed=1))
    assert len(subset_indices(train_idx, 0.25, seed=0)) == 12
    assert torch.equal(subset_indices(train_idx, None, seed=0), train_idx)
    for bad in (0, 49, 1.5):
        with pytest.raises(ConfigError, match=r"data\.train_subset"):
            subset_indices(train_idx, bad, seed=0)


def test_crop_flip_is_a_shifted_window_and_deterministic():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    assert torch.equal(CropFlip(padding=0, flip=0.0)(images, torch.Generator().manual_seed(0)), images)
    flipped = CropFlip(padding=0, flip=1.0)(images, torch.Generator().manual_seed(0))
    assert torch.equal(flipped, images.flip(3))
    out = CropFlip(padding=2, flip=0.0)(images, torch.Generator().manual_seed(5))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for b in range(2):  # every output equals some 6x6 window of the padded image
        assert any(torch.equal(out[b], padded[b, :, i : i + 6, j : j + 6]) for i in range(5) for j in range(5))
    dataset = TensorImageDataset(images.to(torch.uint8), torch.tensor([0, 1]), CropFlip(2, 0.5), seed=7)
    assert torch.equal(dataset.__getitems__([1, 0])[0], dataset.__getitems__([1, 0])[0])


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog", "emu"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=16, batch_size=4, val_size=0.25, num_workers=0)
    dm.setup("fit")
    dm.setup("test")
    assert dm.num_classes == 3 and dm.classes == ["cat", "dog", "emu"]
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (14, 4, 6)
    images, _ = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    with pytest.raises(ConfigError, match=r"num_classes=5"):
        ImageFolderDataModule(root=str(tmp_path), num_classes=5).setup("fit")


def test_cifar_without_files_explains_download(tmp_path):
    dm = DATA.build("cifar10", root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=r"data\.download=true"):
        dm.setup("fit")


@needs_fashion_mnist
def test_real_fashion_mnist_default_location():
    dm = FashionMNISTDataModule()
    images, labels = dm.load(train=True)
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [6000] * 10
    images, labels = dm.load(train=False)
    assert images.shape == (10000, 1, 28, 28)


def test_image_folder_config_names_the_missing_folder_before_num_classes(make_cfg, tmp_path):
    """data=image_folder: the model's num_classes comes from the class folders; a bad root says so first."""
    from tasks.app.runner import build

    with pytest.raises(DatasetNotFoundError, match=r"has no train folder"):
        build(make_cfg("data=image_folder", f"data.root={tmp_path / 'missing'}", tiny=False, name="bad"))
    for cls in ("cat", "dog", "emu", "yak"):
        (tmp_path / "tree" / "train" / cls).mkdir(parents=True)
    cfg = make_cfg("data=image_folder", f"data.root={tmp_path / 'tree'}", tiny=False, name="good")
    task, _, _ = build(cfg)
    assert task.hparams.num_classes == 4
