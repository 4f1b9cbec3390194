import random

import pytest
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as transformers_smart_resize

from backend.resolution import MAX_PIXELS, MIN_PIXELS, TILE_SLACK, plan_tiles, smart_resize, tile_spans, view_size, visual_tokens


@pytest.mark.parametrize(
    "height,width,expected",
    [(512, 512, (504, 504)), (1024, 1024, (1008, 1008)), (3000, 4000, (868, 1148)), (100, 100, (224, 224))],
)
def test_model_io_examples(height, width, expected):
    assert smart_resize(height, width) == expected


def test_same_as_transformers_on_many_sizes():
    rng = random.Random(0)
    for _ in range(3000):
        h, w = rng.randint(1, 9000), rng.randint(1, 9000)
        if max(h, w) / min(h, w) > 200:
            continue
        assert smart_resize(h, w) == transformers_smart_resize(h, w, 28, MIN_PIXELS, MAX_PIXELS), (h, w)


def test_result_is_a_fixed_point_inside_the_budget():
    rng = random.Random(1)
    for _ in range(500):
        h, w = rng.randint(20, 20000), rng.randint(20, 20000)
        if max(h, w) / min(h, w) > 150:
            continue
        rh, rw = view_size(h, w)
        assert rh % 28 == 0 and rw % 28 == 0
        assert rh * rw <= MAX_PIXELS
        assert smart_resize(rh, rw) == (rh, rw)  # the processor will not resize it again
        assert visual_tokens(rh, rw) <= 1296


def test_extreme_aspect_ratio_is_refused():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 5000)
    # 197:1 is accepted by smart_resize, but rounding grows it to 211:1, which the processor refuses.
    with pytest.raises(ValueError):
        view_size(30, 5900)


@pytest.mark.parametrize("length,tile,overlap", [(512, 512, 128), (513, 512, 128), (530, 512, 128), (2048, 512, 128), (1000, 300, 0), (100, 512, 128)])
def test_tiles_cover_the_extent_with_the_overlap(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    covered = [False] * length
    for s, size in spans:
        assert s >= 0 and s + size <= length
        for i in range(s, s + size):
            covered[i] = True
    assert all(covered)
    starts = [s for s, _ in spans]
    for a, b in zip(starts, starts[1:]):
        assert b - a <= tile - overlap  # neighbours overlap by at least the overlap
    if length > tile + TILE_SLACK:
        assert all(size == tile for _, size in spans)
        assert starts[-1] + tile == length  # last tile ends at the edge, full size
        spacing = [b - a for a, b in zip(starts, starts[1:])]
        assert max(spacing) - min(spacing) <= 1  # evenly spread
        assert len(starts) == -(-(length - overlap) // (tile - overlap))  # no more tiles than the overlap needs
    else:
        assert spans == [(0, length)]  # one tile: a second would only add a sliver


def test_an_extent_a_few_pixels_over_the_tile_is_one_view():
    """505 px at 504 px tiles: one view of the whole extent (read into 504 px), not four."""
    tiles = plan_tiles(505, 505, 504, 128)
    assert [(t.x, t.y, t.width, t.height) for t in tiles] == [(0, 0, 505, 505)]
    assert view_size(505, 505) == (504, 504)
    assert len(plan_tiles(504 + TILE_SLACK + 1, 504, 504, 128)) == 2


def test_plan_tiles_row_major_and_clipped():
    tiles = plan_tiles(1000, 600, 512, 128)
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert [(t.x, t.y) for t in tiles] == [(0, 0), (244, 0), (488, 0), (0, 88), (244, 88), (488, 88)]
    assert all(t.width == 512 and t.height == 512 for t in tiles)
    small = plan_tiles(100, 80, 512, 128)
    assert [(t.width, t.height) for t in small] == [(100, 80)]


def test_bad_tile_options():
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(1000, 1000, 512, 512)
    with pytest.raises(ValueError, match="tile size"):
        plan_tiles(1000, 1000, 10, 0)
