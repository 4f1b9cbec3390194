"""Dynamic resolution: how many pixels the model sees, and how an extent becomes views.

Pure functions. A *view* size returned here is always a `smart_resize` fixed point (sides are
multiples of 28 inside the pixel budget), so the processor leaves the image as it is and the
coordinates the model answers in are exactly the pixels of the image we read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PATCH_SIZE = 14
MERGE_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # one language-model token per 28x28 pixels
MIN_PIXELS = 64 * FACTOR * FACTOR  # 224^2, the released multi-task recipe
MAX_PIXELS = 1296 * FACTOR * FACTOR  # 1008^2: at most 1296 visual tokens per image
MAX_ASPECT_RATIO = 200
# The most pixels one image may have (16384 visual tokens: Qwen2.5-VL's processor default, the
# RSCoVLM data builders' image limit); a request asking for more is refused.
MAX_IMAGE_PIXELS = 16384 * FACTOR * FACTOR

# Detection was trained and evaluated on 512 px tiles; neighbouring tiles overlap so an object
# cut by one tile edge is whole in the next (merged afterwards by rotated NMS). 128 px is a
# quarter of a tile: more than the largest common objects (planes, ships) at DOTA's GSD.
DEFAULT_TILE_SIZE = 512
DEFAULT_TILE_OVERLAP = 128


def default_tile_overlap(tile_size: int) -> int:
    """The overlap of a tile size no one chose an overlap for: a quarter of it, at most 128 px."""
    return min(DEFAULT_TILE_OVERLAP, tile_size // 4)


def smart_resize(
    height: int, width: int, factor: int = FACTOR, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """Qwen2.5-VL's resize rule: sides to multiples of `factor`, area into [min, max]."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"aspect ratio {max(height, width) / min(height, width):.0f} is over {MAX_ASPECT_RATIO}; "
            "choose a less elongated extent"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def view_size(height: int, width: int, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """The size to read a view at: smart_resize's answer, checked to be a fixed point the
    processor accepts as it is (a near-200 aspect ratio can grow past 200 when rounded)."""
    size = smart_resize(height, width, FACTOR, min_pixels, max_pixels)
    if smart_resize(*size, FACTOR, min_pixels, max_pixels) != size:
        raise ValueError(f"a {width}x{height} view cannot be shown at a stable size")
    return size


def visual_tokens(height: int, width: int) -> int:
    """Language-model tokens of an image already at a smart_resize size."""
    return (height // FACTOR) * (width // FACTOR)


@dataclass(frozen=True)
class Tile:
    """A tile in the (possibly resampled) pixel grid of the extent: offset and size."""

    index: int
    x: int
    y: int
    width: int
    height: int


# An extent this many pixels longer than a tile is read as one tile, shrunk by under 2%, rather
# than as a second tile that would add a sliver (a 505 px extent: one view, not four).
TILE_SLACK = 8


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, size) of tiles covering [0, length), overlapping by at least `overlap`. As few
    tiles as that allows, spread evenly: the DOTA split instead steps by a fixed stride and
    pushes the last tile back to the edge, which for the same count can leave two tiles a few
    pixels apart and the other seams with the bare minimum of context. A length within
    TILE_SLACK of the tile is one tile of that length (read into the tile's size)."""
    if length <= tile + TILE_SLACK:
        return [(0, length)]
    step = tile - overlap
    count = math.ceil((length - tile) / step) + 1
    return [(round(i * (length - tile) / (count - 1)), tile) for i in range(count)]


def plan_tiles(width: int, height: int, tile: int = DEFAULT_TILE_SIZE, overlap: int = DEFAULT_TILE_OVERLAP) -> list[Tile]:
    """Row-major tiles over an extent of width x height pixels (at the working GSD)."""
    if tile < FACTOR:
        raise ValueError(f"tile size {tile} is below {FACTOR} px, the model's smallest patch grid")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap {overlap} must be at least 0 and less than the tile size {tile}")
    tiles = []
    for y, tile_height in tile_spans(height, tile, overlap):
        for x, tile_width in tile_spans(width, tile, overlap):
            tiles.append(Tile(len(tiles), x, y, tile_width, tile_height))
    return tiles
