"""MiniMax-VL-01's dynamic resolution: an image becomes a grid of non-overlapping tiles plus one thumbnail.

The image is resized to the grid of a preset list — ``tile_size × (1…n)`` per side, at most ``max_tiles`` tiles —
whose aspect ratio is closest to its own (:func:`best_grid`), and cut into ``rows × cols`` tiles of
``tile_size²`` pixels; a thumbnail (the whole image resized to one tile) comes first. Every tile is encoded
separately by the vision tower and its ``P`` patch features are kept (no pooling); the language model reads the
thumbnail's features, then each row of tiles left to right followed by one learned ``image_newline``:
``P · (1 + rows · cols) + rows`` tokens per image (:func:`image_token_count`). With ``dynamic=False`` (fixed
resolution) an image is its thumbnail alone: ``P`` tokens.

Tiles are laid out as ``uint8 [n, 3, S, S]`` (thumbnail first, then the tiles row-major); a batch concatenates the
tiles of all its images in the order their ``<image>`` placeholders appear, with ``grids`` ``int64 [images, 2]``
(rows, cols; ``(0, 0)`` for a thumbnail-only image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from zoo.errors import ConfigError

__all__ = ["ImageTooLargeError", "Tiling", "best_grid", "candidate_grids", "image_token_count"]


class ImageTooLargeError(ValueError):
    """An image is larger than the largest grid of tiles can hold (``tile_size × max_tiles`` per side)."""


def candidate_grids(max_tiles: int) -> list[tuple[int, int]]:
    """Every ``(rows, cols)`` with ``rows · cols ≤ max_tiles``, in increasing tile count (then rows)."""
    if max_tiles < 1:
        raise ConfigError(f"max_tiles={max_tiles} must be ≥ 1")
    grids = [(r, c) for r in range(1, max_tiles + 1) for c in range(1, max_tiles // r + 1)]
    return sorted(grids, key=lambda g: (g[0] * g[1], g[0]))


def best_grid(width: int, height: int, tile_size: int, max_tiles: int) -> tuple[int, int]:
    """The ``(rows, cols)`` grid for a ``width × height`` image: the aspect ratio ``cols / rows`` closest to
    ``width / height`` (in log ratio); among equally close grids, the one whose pixel count ``rows · cols · S²``
    is closest to the image's (in log ratio), then the fewest tiles."""
    if width < 1 or height < 1:
        raise ValueError(f"an image of {width}×{height} pixels has no content")
    aspect = math.log(width / height)
    pixels = math.log(width * height)

    def cost(grid: tuple[int, int]) -> tuple[float, float, int]:
        rows, cols = grid
        return (
            round(abs(math.log(cols / rows) - aspect), 9),
            round(abs(math.log(rows * cols * tile_size**2) - pixels), 9),
            rows * cols,
        )

    return min(candidate_grids(max_tiles), key=cost)


def image_token_count(grid: tuple[int, int], patches_per_tile: int) -> int:
    """Language-model tokens of one image: ``P · (1 + rows · cols) + rows`` (thumbnail, tiles, a newline after
    each row of tiles); ``P`` for a thumbnail-only image (``grid == (0, 0)``)."""
    rows, cols = grid
    return patches_per_tile * (1 + rows * cols) + rows


@dataclass(frozen=True)
class Tiling:
    """How images are cut: ``tile_size`` pixels per tile side, at most ``max_tiles`` tiles besides the thumbnail,
    ``dynamic`` (False: the thumbnail alone — fixed resolution)."""

    tile_size: int = 336
    max_tiles: int = 9
    dynamic: bool = True

    def __post_init__(self) -> None:
        if self.tile_size < 1:
            raise ConfigError(f"tile_size={self.tile_size} must be ≥ 1")
        candidate_grids(self.max_tiles)

    @property
    def max_side(self) -> int:
        """The longest image side accepted: the widest grid's, ``tile_size · max_tiles``."""
        return self.tile_size * self.max_tiles

    def grid(self, width: int, height: int) -> tuple[int, int]:
        """The image's ``(rows, cols)``; ``(0, 0)`` when not dynamic."""
        if max(width, height) > self.max_side:
            raise ImageTooLargeError(
                f"an image of {width}×{height} pixels is larger than the largest grid holds ({self.max_side} px per "
                f"side = tile_size {self.tile_size} × max_tiles {self.max_tiles}); resize it or raise max_tiles"
            )
        return best_grid(width, height, self.tile_size, self.max_tiles) if self.dynamic else (0, 0)

    def num_tokens(self, width: int, height: int, patches_per_tile: int) -> int:
        """:func:`image_token_count` of a ``width × height`` image."""
        return image_token_count(self.grid(width, height), patches_per_tile)

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(tiles uint8 [1 + rows · cols, 3, S, S], (rows, cols))``: the thumbnail, then the tiles row-major."""
        image = image.convert("RGB")
        rows, cols = self.grid(*image.size)
        s = self.tile_size
        pieces = [np.asarray(image.resize((s, s), Image.BICUBIC))]
        if rows:
            whole = np.asarray(image.resize((cols * s, rows * s), Image.BICUBIC))
            pieces += [whole[r * s : (r + 1) * s, c * s : (c + 1) * s] for r in range(rows) for c in range(cols)]
        tiles = torch.from_numpy(np.stack(pieces)).permute(0, 3, 1, 2).contiguous()
        return tiles, (rows, cols)
