"""LLaVA-format conversations rendered and tokenised for a vision-language model.

A record is ``{"id": str, "image": str | list[str], "conversations": [{"from": "human" | "gpt", "value": str},
...], "type": str (optional)}``. The conversation is rendered turn by turn::

    human turn:  "USER: " + value + "\\n"
    gpt turn:    "ASSISTANT: " + value + <eos> + "\\n"

and each ``<image>`` tag of a human turn becomes a run of ``image_tokens[k]`` copies of ``image_token_id`` (the
``k``-th tag gets the ``k``-th image's token count, :func:`zoo.vision_language.tiling.image_token_count`).

Labels follow :mod:`tasks.data.text.packing`: ``labels[t]`` is the target of position ``t``, i.e.
``input_ids[t + 1]``, kept only where that token is an answer token of a gpt turn or the eos that ends it;
every other position (the prompt, the images, the role prefixes, the newline after an eos, the last position)
is :data:`~tasks.data.text.packing.IGNORE_INDEX`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tasks.data.text.packing import IGNORE_INDEX
from tasks.data.tokenizer import Tokenizer
from zoo.errors import ConfigError

__all__ = [
    "IMAGE_TAG",
    "ROLES",
    "count_image_tags",
    "encode_conversation",
    "encode_described_prompt",
    "encode_prompt",
    "image_paths",
    "normalize_answer",
    "turns",
]

IMAGE_TAG = "<image>"
ROLES = {"human": "USER: ", "gpt": "ASSISTANT: "}  # the prefix each speaker's turn is rendered with


def normalize_answer(text: str) -> str:
    """The form answers are compared in (exact match): lowercase, stripped, one trailing period removed."""
    text = text.strip().lower()
    return text[:-1].rstrip() if text.endswith(".") else text


def _name(record: Mapping[str, Any]) -> str:
    return repr(record.get("id", "<no id>"))


def image_paths(record: Mapping[str, Any]) -> list[str]:
    """The record's ``image`` field as a list of relative paths (``[]`` without images)."""
    images = record.get("image")
    if images is None:
        return []
    if isinstance(images, str):
        return [images]
    if isinstance(images, (list, tuple)) and all(isinstance(p, str) for p in images):
        return list(images)
    raise ConfigError(f"record {_name(record)}: 'image' must be a path or a list of paths, got {images!r}")


def turns(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``[(speaker, value), ...]`` of the record, checked: speakers in :data:`ROLES`, at least one gpt turn, no
    ``<image>`` in a gpt turn."""
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise ConfigError(f"record {_name(record)}: 'conversations' must be a non-empty list of turns")
    out = []
    for k, turn in enumerate(conversations):
        speaker = turn.get("from") if isinstance(turn, Mapping) else None
        value = turn.get("value") if isinstance(turn, Mapping) else None
        if speaker not in ROLES or not isinstance(value, str):
            raise ConfigError(
                f"record {_name(record)}: turn {k} must be {{'from': one of {tuple(ROLES)}, 'value': str}}, "
                f"got {turn!r}"
            )
        if speaker == "gpt" and IMAGE_TAG in value:
            raise ConfigError(f"record {_name(record)}: turn {k} (gpt) holds {IMAGE_TAG}; only human turns may")
        out.append((speaker, value))
    if not any(speaker == "gpt" for speaker, _ in out):
        raise ConfigError(f"record {_name(record)}: no gpt turn, so nothing to train on or to answer")
    return out


def count_image_tags(record: Mapping[str, Any]) -> int:
    """The number of ``<image>`` tags in the record's human turns."""
    return sum(value.count(IMAGE_TAG) for speaker, value in turns(record) if speaker == "human")


def _human(value: str, tokenizer: Tokenizer, runs: list[list[int]]) -> list[int]:
    """``"USER: " + value + "\\n"`` with each tag replaced by the next run of ``runs`` (consumed from the front)."""
    pieces = value.split(IMAGE_TAG)
    ids = tokenizer.encode(ROLES["human"] + pieces[0])
    for piece in pieces[1:]:
        ids += runs.pop(0)
        ids += tokenizer.encode(piece)
    return ids + tokenizer.encode("\n")


def _gpt(value: str, tokenizer: Tokenizer) -> tuple[list[int], list[int], list[int]]:
    """``("ASSISTANT: ", value + eos, "\\n")`` as ids: the prefix, the supervised answer, the newline."""
    return tokenizer.encode(ROLES["gpt"]), [*tokenizer.encode(value), tokenizer.eos_id], tokenizer.encode("\n")


def _runs(record: Mapping[str, Any], image_tokens: Sequence[int], image_token_id: int) -> list[list[int]]:
    tags = count_image_tags(record)
    if tags != len(image_tokens):
        raise ConfigError(f"record {_name(record)}: {tags} {IMAGE_TAG} tags but {len(image_tokens)} images")
    return [[image_token_id] * int(n) for n in image_tokens]


def encode_conversation(
    record: Mapping[str, Any], image_tokens: Sequence[int], tokenizer: Tokenizer, image_token_id: int
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)``, two lists of one length ``L``: the rendered conversation and its next-token
    targets (answer tokens and their eos only, else ``IGNORE_INDEX``).

    Args:
        record: a LLaVA record (``conversations`` is read).
        image_tokens: the token count of each image, in the order of the ``<image>`` tags.
        tokenizer: text → ids; its ``eos_id`` ends each gpt turn.
        image_token_id: the placeholder id of image tokens.
    """
    runs = _runs(record, image_tokens, image_token_id)
    ids: list[int] = []
    supervised: list[bool] = []  # per token of ids: is it a target
    for speaker, value in turns(record):
        if speaker == "human":
            part = _human(value, tokenizer, runs)
            ids += part
            supervised += [False] * len(part)
        else:
            prefix, answer, newline = _gpt(value, tokenizer)
            ids += prefix + answer + newline
            supervised += [False] * len(prefix) + [True] * len(answer) + [False] * len(newline)
    labels = [ids[t + 1] if supervised[t + 1] else IGNORE_INDEX for t in range(len(ids) - 1)] + [IGNORE_INDEX]
    return ids, labels


def encode_prompt(
    record: Mapping[str, Any], image_tokens: Sequence[int], tokenizer: Tokenizer, image_token_id: int
) -> tuple[list[int], str]:
    """``(prompt_ids, answer)`` for generation: the rendering up to and including ``"ASSISTANT: "`` of the last gpt
    turn (earlier gpt turns whole, with their eos), and that turn's text. Arguments as :func:`encode_conversation`."""
    runs = _runs(record, image_tokens, image_token_id)
    ids, answer = _render_to_last_answer(turns(record), tokenizer, runs)
    if runs:
        raise ConfigError(f"record {_name(record)}: an {IMAGE_TAG} tag comes after the last gpt turn")
    return ids, answer


def _render_to_last_answer(
    conversation: list[tuple[str, str]], tokenizer: Tokenizer, runs: list[list[int]]
) -> tuple[list[int], str]:
    """``(ids, answer)``: ``conversation`` rendered up to and including ``"ASSISTANT: "`` of its last gpt turn
    (earlier gpt turns whole, with their eos; tags replaced by ``runs``, consumed), and that turn's text."""
    last = max(k for k, (speaker, _) in enumerate(conversation) if speaker == "gpt")
    ids: list[int] = []
    for speaker, value in conversation[:last]:
        if speaker == "human":
            ids += _human(value, tokenizer, runs)
        else:
            ids += [token for part in _gpt(value, tokenizer) for token in part]
    return ids + tokenizer.encode(ROLES["gpt"]), conversation[last][1]


def encode_described_prompt(
    record: Mapping[str, Any], image_tokens: Sequence[int], tokenizer: Tokenizer, image_token_id: int, describe: str
) -> tuple[list[int], list[int] | None, str]:
    """``(prefix_ids, followup_ids, answer)`` for describe-then-answer generation: the model first describes the
    images, then answers the record's question with its own description in context.

    The record's images move to a first turn that asks ``describe``: ``prefix_ids`` renders
    ``"USER: <image>…\n{describe}\nASSISTANT: "``; the model continues it with a description and its eos;
    ``followup_ids`` renders what comes after that eos: ``"\n"``, then the record's conversation up to
    ``"ASSISTANT: "`` of its last gpt turn with its ``<image>`` tags removed (earlier gpt turns whole).
    ``followup_ids`` is None when the record *is* the description request (its first human turn, tags removed,
    is ``describe``): then ``prefix_ids`` is its plain prompt (:func:`encode_prompt`). Training records of this
    protocol put the reference description in that first turn (``copy_paste_vqa``'s ``described`` files).

    Raises:
        ConfigError: an ``<image>`` tag outside the first human turn.
    """
    conversation = turns(record)
    first = next(k for k, (speaker, _) in enumerate(conversation) if speaker == "human")
    if any(IMAGE_TAG in value for k, (speaker, value) in enumerate(conversation) if k != first):
        raise ConfigError(f"record {_name(record)}: describe-then-answer needs every {IMAGE_TAG} in the first human "
                          f"turn")  # fmt: skip
    value = conversation[first][1]
    tags = value.count(IMAGE_TAG)
    question = value.replace(IMAGE_TAG, "").strip()
    if question == describe.strip():
        prompt, answer = encode_prompt(record, image_tokens, tokenizer, image_token_id)
        return prompt, None, answer
    runs = _runs(record, image_tokens, image_token_id)
    prefix = _human("\n".join([IMAGE_TAG] * tags + [describe]), tokenizer, runs) + tokenizer.encode(ROLES["gpt"])
    rest = [(conversation[first][0], question), *conversation[first + 1 :]]
    followup, answer = _render_to_last_answer(rest, tokenizer, [])
    return prefix, tokenizer.encode("\n") + followup, answer
