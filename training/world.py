"""The synthetic world's vocabulary: its object classes and their sizes and colours, the named
palette, the ground surfaces, and a scene as data (objects, surfaces, zones, where it sits on the
map). `training.layouts` plans scenes of it, `training.synthetic` draws and writes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine

from backend.geometry import rbox_to_points

DEFAULT_CRS = "EPSG:32633"
DEFAULT_ORIGIN = (500_000.0, 4_400_000.0)

# Class -> (length m, width m) ranges and colours; shapes are drawn by `_draw_object`.
CLASS_SPECS = {
    "small vehicle": ((4.0, 5.0), (1.8, 2.1), [(200, 30, 30), (30, 60, 190), (235, 235, 235), (20, 20, 20), (220, 190, 40)]),
    "large vehicle": ((10.0, 14.0), (2.5, 2.9), [(240, 240, 230), (230, 180, 20)]),
    "ship": ((25.0, 45.0), (7.0, 11.0), [(245, 245, 245), (150, 150, 160)]),
    "plane": ((30.0, 40.0), (30.0, 40.0), [(215, 215, 225)]),
    "storage tank": ((16.0, 26.0), (16.0, 26.0), [(250, 250, 250), (200, 200, 195)]),
    "building": ((16.0, 40.0), (12.0, 24.0), [(170, 70, 50), (120, 120, 125), (200, 200, 200)]),
}
CLASSES = tuple(CLASS_SPECS)

# Colours have names, so a grounding expression or an answer can say them.
PALETTE = {
    "red": (200, 30, 30),
    "blue": (30, 60, 190),
    "white": (235, 235, 235),
    "black": (20, 20, 20),
    "yellow": (220, 190, 40),
    "grey": (150, 150, 160),
    "orange": (225, 120, 30),
    "green": (40, 130, 60),
}

# Surface -> (base colour, texture amplitude): ground, water and paving under the objects.
SURFACES = {
    "grass": ((95, 122, 70), (35, 40, 22)),
    "crop": ((128, 140, 72), (30, 30, 20)),
    "soil": ((140, 116, 86), (26, 22, 18)),
    "forest": ((46, 74, 40), (30, 36, 22)),
    "gravel": ((158, 142, 116), (34, 30, 26)),
    "concrete": ((182, 182, 176), (22, 22, 22)),
    "asphalt": ((72, 74, 77), (16, 16, 16)),
    "water": ((35, 72, 98), (12, 14, 18)),
    "marking": ((232, 232, 222), (6, 6, 6)),
    "tree": ((38, 84, 36), (34, 40, 26)),
    "shadow": ((36, 40, 36), (8, 8, 8)),
}
SURFACE_IDS = {name: i for i, name in enumerate(SURFACES)}


def colour_name(rgb) -> str:
    """The palette name nearest to an RGB colour."""
    r, g, b = (float(v) for v in rgb)
    return min(PALETTE, key=lambda name: (PALETTE[name][0] - r) ** 2 + (PALETTE[name][1] - g) ** 2 + (PALETTE[name][2] - b) ** 2)


@dataclass(frozen=True)
class Patch:
    """A polygon of one surface, in scene pixels; later patches are drawn over earlier ones."""

    surface: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Zone:
    """The part of a scene one layout filled: what the scene is there (a classification class)."""

    kind: str
    x0: float
    y0: float
    x1: float
    y1: float

    def contains(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        return self.x0 <= x0 and self.y0 <= y0 and x1 <= self.x1 and y1 <= self.y1


@dataclass(frozen=True)
class SceneObject:
    label: str
    cx: float  # pixels
    cy: float
    length: float  # pixels, along the heading
    width: float
    angle: float  # degrees, clockwise on screen
    colour: tuple[int, int, int]

    def box(self) -> np.ndarray:
        return rbox_to_points(self.cx, self.cy, self.length, self.width, self.angle)

    @property
    def colour_name(self) -> str:
        return colour_name(self.colour)


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    gsd: float
    seed: int
    objects: tuple[SceneObject, ...]
    river: tuple[float, float, float] | None  # centre x at top, slope (px per px of y), half width px
    roads: tuple[tuple[str, float, float], ...]  # ("h"|"v", position px, half width px)
    patches: tuple[Patch, ...] = ()
    background: str | None = None  # a SURFACES name; None: the mixed kind's ground
    zones: tuple[Zone, ...] = ()
    # where the image sits on the map, in pixels off the world's origin: a later image of the same
    # place registered a fraction of a pixel apart (training.change_pairs)
    offset: tuple[float, float] = (0.0, 0.0)

    def zone_of(self, x0: float, y0: float, x1: float, y1: float) -> Zone | None:
        """The zone wholly holding a window, if one does."""
        return next((z for z in self.zones if z.contains(x0, y0, x1, y1)), None)

    @property
    def transform(self) -> Affine:
        dx, dy = self.offset
        return Affine(self.gsd, 0.0, DEFAULT_ORIGIN[0] + dx * self.gsd, 0.0, -self.gsd, DEFAULT_ORIGIN[1] + (self.height - dy) * self.gsd)
