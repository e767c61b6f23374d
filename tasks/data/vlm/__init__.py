"""Vision-language data (MiniMax-VL-01 style): LLaVA-format conversations with tiled images.

=================== =============================================================================================
name                data
=================== =============================================================================================
``llava_json``      any LLaVA JSON (``id``, ``image``, ``conversations``) + image folder
``copy_paste_vqa``  generated: captions and questions (count, presence, leftmost, quadrant, detail) about
                    copy-paste scenes (:mod:`tasks.data.vlm.copy_paste_vqa`)
=================== =============================================================================================

Modules: :mod:`~tasks.data.vlm.conversation` (rendering and tokenising), :mod:`~tasks.data.vlm.copy_paste_vqa`
(the generator), :mod:`~tasks.data.vlm.collate` (batches), :mod:`~tasks.data.vlm.datamodule` (the DataModules).
"""

from tasks.data.vlm.collate import Collate, RowSampler, eval_collate
from tasks.data.vlm.conversation import (
    IMAGE_TAG,
    encode_conversation,
    encode_described_prompt,
    encode_prompt,
    normalize_answer,
)
from tasks.data.vlm.copy_paste_vqa import NAMES, QUESTION_TYPES
from tasks.data.vlm.datamodule import BLANK, CopyPasteVQADataModule, LlavaDataModule, LlavaSet, RecordImageTooLargeError

__all__ = [
    "BLANK",
    "IMAGE_TAG",
    "NAMES",
    "QUESTION_TYPES",
    "Collate",
    "CopyPasteVQADataModule",
    "LlavaDataModule",
    "LlavaSet",
    "RecordImageTooLargeError",
    "RowSampler",
    "encode_conversation",
    "encode_described_prompt",
    "encode_prompt",
    "eval_collate",
    "normalize_answer",
]
