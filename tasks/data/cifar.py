"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) in torchvision's format under ``root``."""

from __future__ import annotations

import torch

from tasks.data.base import InMemoryImageData
from zoo.errors import ConfigError, DatasetNotFoundError
from zoo.registries import DATA


class CIFARData(InMemoryImageData):
    """CIFAR read by torchvision from ``root`` (``cifar-10-batches-py`` / ``cifar-100-python``).

    Args:
        download: let torchvision download the archive when it is missing (off by default: runs stay offline).
    """

    native_chans = 3
    crop_padding = 4

    def __init__(self, root: str | None = None, download: bool = False, **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        self.download = download

    def _dataset_class(self):
        import torchvision

        return torchvision.datasets.CIFAR10 if self.num_classes == 10 else torchvision.datasets.CIFAR100

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                self._dataset_class()(self._root(), train=train, download=True)

    def _root(self) -> str:
        if not self.root:
            raise ConfigError(f"data.root is required for CIFAR-{self.num_classes}: the folder torchvision reads")
        return self.root

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            dataset = self._dataset_class()(self._root(), train=train, download=False)
        except RuntimeError as exc:
            raise DatasetNotFoundError(
                f"CIFAR-{self.num_classes} not found under data.root={self.root} ({exc}). Set data.download=true to "
                f"download it there, or point data.root at a folder holding torchvision's "
                f"{'cifar-10-batches-py' if self.num_classes == 10 else 'cifar-100-python'} directory."
            ) from exc
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(dataset.targets, dtype=torch.long)


@DATA.register("cifar10")
class CIFAR10DataModule(CIFARData):
    """CIFAR-10: 50,000 + 10,000 colour 32×32 images, 10 classes."""

    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


@DATA.register("cifar100")
class CIFAR100DataModule(CIFARData):
    """CIFAR-100: 50,000 + 10,000 colour 32×32 images, 100 classes."""

    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
