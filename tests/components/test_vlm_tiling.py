"""zoo.vision_language.tiling: MiniMax-VL-01's dynamic resolution — grid choice, tiles, token counts, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.errors import ConfigError
from zoo.vision_language.tiling import ImageTooLargeError, Tiling, best_grid, candidate_grids, image_token_count


def test_candidate_grids_are_every_grid_up_to_max_tiles():
    assert candidate_grids(1) == [(1, 1)]
    grids = candidate_grids(6)
    assert set(grids) == {(r, c) for r in range(1, 7) for c in range(1, 7) if r * c <= 6}
    assert [r * c for r, c in grids] == sorted(r * c for r, c in grids)
    with pytest.raises(ConfigError, match="max_tiles=0"):
        candidate_grids(0)


@pytest.mark.parametrize(
    ("size", "max_tiles", "grid"),
    [
        ((336, 336), 9, (1, 1)),  # one tile's worth: no upscaling to 2×2 or 3×3
        ((672, 672), 9, (2, 2)),
        ((1000, 1000), 9, (3, 3)),
        ((1000, 1000), 4, (2, 2)),
        ((1008, 336), 9, (1, 3)),  # 3:1 landscape
        ((336, 1008), 9, (3, 1)),  # 1:3 portrait
        ((700, 330), 9, (1, 2)),  # ≈ 2.1:1 → 1×2 (aspect 2) beats 1×3 (aspect 3)
        ((5000, 100), 4, (1, 4)),  # extreme aspect: the widest grid
        ((100, 5000), 6, (6, 1)),
    ],
)
def test_best_grid_keeps_the_aspect_ratio_closest(size, max_tiles, grid):
    assert best_grid(*size, tile_size=336, max_tiles=max_tiles) == grid


def test_best_grid_ties_break_by_resolution_then_fewer_tiles():
    """A square image has every r×r grid at its aspect: the one whose pixels are nearest the image's wins."""
    assert best_grid(64, 64, tile_size=32, max_tiles=9) == (2, 2)
    assert best_grid(40, 40, tile_size=32, max_tiles=9) == (1, 1)  # 40² is nearer 32² than 64² (in log ratio)
    assert best_grid(96, 95, tile_size=32, max_tiles=9) == (3, 3)


@pytest.mark.parametrize(("grid", "patches", "count"), [((1, 1), 576, 576 * 2 + 1), ((2, 3), 16, 16 * 7 + 2),
                                                        ((3, 1), 4, 4 * 4 + 3), ((0, 0), 16, 16)])  # fmt: skip
def test_image_token_count_is_thumbnail_tiles_and_a_newline_per_row(grid, patches, count):
    assert image_token_count(grid, patches) == count


def test_worst_case_token_count_of_minimax_vl_01():
    """2016² at 336-px tiles (6×6 grid) with ViT-L/14's 576 patches per tile: 37 tiles of features + 6 newlines —
    the ≈21K visual tokens of the spec."""
    tiling = Tiling(tile_size=336, max_tiles=36)
    assert tiling.grid(2016, 2016) == (6, 6)
    assert tiling.num_tokens(2016, 2016, 576) == 37 * 576 + 6


@pytest.mark.parametrize("size", [(50, 20), (20, 50), (33, 33), (64, 64), (1, 64)])
def test_tiles_are_the_thumbnail_then_the_grid_row_major(size):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    tiling = Tiling(tile_size=16, max_tiles=4)
    tiles, (rows, cols) = tiling(image)
    assert (rows, cols) == best_grid(*size, tile_size=16, max_tiles=4)
    assert tiles.dtype == torch.uint8 and tiles.shape == (1 + rows * cols, 3, 16, 16)
    thumbnail = np.asarray(image.resize((16, 16), Image.BICUBIC))
    assert torch.equal(tiles[0], torch.from_numpy(thumbnail.copy()).permute(2, 0, 1))
    whole = torch.from_numpy(np.array(image.resize((cols * 16, rows * 16), Image.BICUBIC))).permute(2, 0, 1)
    for r in range(rows):
        for c in range(cols):
            assert torch.equal(tiles[1 + r * cols + c], whole[:, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16])


def test_fixed_resolution_is_the_thumbnail_alone():
    tiling = Tiling(tile_size=16, max_tiles=4, dynamic=False)
    tiles, grid = tiling(Image.new("RGB", (40, 24)))
    assert grid == (0, 0) and tiles.shape == (1, 3, 16, 16)
    assert tiling.num_tokens(40, 24, 4) == 4


def test_an_image_beyond_the_largest_grid_is_refused():
    tiling = Tiling(tile_size=16, max_tiles=4)
    assert tiling.max_side == 64
    tiling.grid(64, 10)
    with pytest.raises(ImageTooLargeError, match=r"65×10 pixels is larger than the largest grid holds \(64 px"):
        tiling.grid(65, 10)
    with pytest.raises(ConfigError, match="tile_size=0"):
        Tiling(tile_size=0)
