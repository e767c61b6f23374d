"""LightningDataModules, registered in ``DATA``.

Image classification (``[B, C, H, W]`` float images, normalised on the device, and ``[B]`` int64 labels):

================== ==============================================================================================
name               data
================== ==============================================================================================
``fashion_mnist``  Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` or ``data.root`` (default)
``cifar10``        CIFAR-10 in torchvision's format under ``data.root`` (``data.download=true`` to fetch it)
``cifar100``       CIFAR-100, likewise
``image_folder``   any ``root/{train,test}/<class>/<image>`` tree
================== ==============================================================================================
"""

from tasks.data.base import ImageClassificationData, InMemoryImageData
from tasks.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from tasks.data.fashion_mnist import FashionMNISTDataModule
from tasks.data.image_folder import ImageFolderDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "FashionMNISTDataModule",
    "ImageClassificationData",
    "ImageFolderDataModule",
    "InMemoryImageData",
]
