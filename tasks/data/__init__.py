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

Object detection / instance segmentation (lists of ``[3, H, W]`` images and torchvision-style target dicts, see
:mod:`tasks.data.coco`):

=================== =============================================================================================
name                data
=================== =============================================================================================
``coco``            any COCO JSON + image folder (boxes, masks from polygons or RLE)
``copy_paste_coco`` generated: garments and emoji pasted onto scikit-image photos (:mod:`tasks.data.copy_paste`)
=================== =============================================================================================

Language-model pretraining (packed token windows: ``input_ids`` / ``labels`` ``[B, T]``, ``cu_seqlens``, see
:mod:`tasks.data.text`):

================== ==============================================================================================
name               data
================== ==============================================================================================
``text_files``     globs of text files or JSON lines (``data.files``); default: the Python standard library's sources
``austen``         Jane Austen's novels from the Debian package ``r-cran-janeaustenr`` (read without R)
``rl_prompts``     RL prompts: lists of an ``ENVIRONMENT``'s problems, see :mod:`tasks.envs`
================== ==============================================================================================

Vision-language (``input_ids`` / ``labels`` with image placeholders, tiled ``pixel_values``, see
:mod:`tasks.data.vlm`):

================== ==============================================================================================
name               data
================== ==============================================================================================
``llava_json``     any LLaVA-format JSON + image folder
``copy_paste_vqa`` generated: captions and questions about copy-paste scenes (:mod:`tasks.data.vlm.copy_paste_vqa`)
================== ==============================================================================================
"""

from tasks.data.austen import AustenDataModule
from tasks.data.base import ImageClassificationData, InMemoryImageData
from tasks.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from tasks.data.coco import COCODataModule, CopyPasteCOCODataModule
from tasks.data.fashion_mnist import FashionMNISTDataModule
from tasks.data.image_folder import ImageFolderDataModule
from tasks.data.rl_prompts import RLPromptData
from tasks.data.text import TextDataModule
from tasks.data.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, load_tokenizer, tokenizer_from_json
from tasks.data.vlm import CopyPasteVQADataModule, LlavaDataModule

__all__ = [
    "AustenDataModule",
    "BPETokenizer",
    "ByteTokenizer",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "COCODataModule",
    "CopyPasteCOCODataModule",
    "CopyPasteVQADataModule",
    "FashionMNISTDataModule",
    "ImageClassificationData",
    "ImageFolderDataModule",
    "InMemoryImageData",
    "LlavaDataModule",
    "RLPromptData",
    "TextDataModule",
    "Tokenizer",
    "load_tokenizer",
    "tokenizer_from_json",
]
