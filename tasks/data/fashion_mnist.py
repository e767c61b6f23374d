"""Fashion-MNIST (Xiao et al., 2017): 60,000 + 10,000 grey 28×28 images of 10 kinds of garment."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from tasks.data.base import InMemoryImageData
from tasks.data.idx import read_idx
from zoo.errors import DatasetNotFoundError
from zoo.registries import DATA

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def find_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz``, also in torchvision's ``FashionMNIST/raw`` layout."""
    for folder in (directory, directory / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


@DATA.register("fashion_mnist")
class FashionMNISTDataModule(InMemoryImageData):
    """Fashion-MNIST from its IDX files.

    ``root`` (or ``$ZOO_FASHION_MNIST``) is a folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``;
    by default the files of the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
    Nothing is downloaded. See :class:`~tasks.data.base.ImageClassificationData` for the other arguments.
    """

    num_classes = 10
    native_chans = 1
    mean = (0.2860,)
    std = (0.3530,)
    crop_padding = 2
    classes = CLASSES

    def directory(self) -> Path:
        return Path(self.root or os.environ.get("ZOO_FASHION_MNIST") or DEBIAN_DIR).expanduser()

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        directory = self.directory()
        paths = [find_file(directory, stem) for stem in FILES[train]]
        if None in paths:
            missing = [stem for stem, path in zip(FILES[train], paths) if path is None]
            raise DatasetNotFoundError(
                f"Fashion-MNIST not found: {directory} lacks {', '.join(m + '[.gz]' for m in missing)}. "
                f"Install the Debian package (sudo apt-get install dataset-fashion-mnist, which puts the files in "
                f"{DEBIAN_DIR}), or set data.root to a folder holding the four IDX files of "
                f"https://github.com/zalandoresearch/fashion-mnist."
            )
        images, labels = _read_split(str(paths[0]), str(paths[1]))
        return images.clone(), labels.clone()


@functools.lru_cache(maxsize=4)
def _read_split(images_path: str, labels_path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded once per process (decompressing the training images takes about a second)."""
    images = torch.from_numpy(read_idx(images_path).copy()).unsqueeze(1)  # [N, 1, 28, 28] uint8
    labels = torch.from_numpy(read_idx(labels_path).astype("int64"))
    return images, labels
