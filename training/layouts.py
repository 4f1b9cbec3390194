"""Where things are in the synthetic world: scene kinds laid out as surfaces and objects.

Each kind fills a zone of a scene the way such a place looks from above: an airport is a
runway, a taxiway and an apron with planes parked in a row; a harbor is water with piers and
ships moored along them; an industrial area is a tank farm and warehouses on gravel; a parking
lot is rows of stalls with cars; a residential area is streets lined with houses and trees.
Every kind holds the objects that make it that kind, so a classifier has something to learn, and
each object has a size and a named colour, so grounding expressions and questions can refer to
it. `town` puts several kinds side by side (the sample scene); `countryside` is fields, woods and
roads with a few small sites, one object each, far apart: a mosaic in which the object a question
is about covers far less than 1 % of the scene (the Zoom-in Chain's case).

Sizes are CLASS_SPECS' metres at the scene's GSD; all randomness comes from one seeded
generator, so a (kind, size, GSD, seed) always gives the same scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely

from training.world import CLASS_SPECS, PALETTE, Patch, Scene, SceneObject, Zone

WORLD_GSD = 0.3  # metres per pixel of the demo world: a car is about 15 x 7 px
KINDS = ("airport", "harbor", "industrial area", "parking lot", "residential area")
LAYOUTS = KINDS + ("town", "countryside")
# The colours each class comes in (PALETTE names).
CLASS_COLOURS = {
    "small vehicle": ("red", "blue", "white", "black", "yellow", "grey"),
    "large vehicle": ("white", "yellow", "red", "blue"),
    "ship": ("white", "grey", "red", "blue"),
    "plane": ("white", "grey", "blue"),
    "storage tank": ("white", "grey", "green"),
    "building": ("red", "grey", "white", "orange"),
}
# Countryside sites: the one object a site holds, and the kind of place that makes it.
SITE_KINDS = {"plane": "airport", "ship": "harbor", "storage tank": "industrial area", "large vehicle": "parking lot", "building": "residential area"}
_GRID = 64  # px, cell of the spatial hash used for overlap checks


@dataclass(frozen=True)
class Frame:
    """A zone in its own axes: u along one side, v across, optionally mirrored, so a layout is
    written once and placed in any of eight orientations."""

    x0: float
    y0: float
    x1: float
    y1: float
    transpose: bool = False  # u runs down the scene instead of across
    flip_u: bool = False
    flip_v: bool = False

    @property
    def U(self) -> float:
        return (self.y1 - self.y0) if self.transpose else (self.x1 - self.x0)

    @property
    def V(self) -> float:
        return (self.x1 - self.x0) if self.transpose else (self.y1 - self.y0)

    def point(self, u: float, v: float) -> tuple[float, float]:
        u = self.U - u if self.flip_u else u
        v = self.V - v if self.flip_v else v
        return (self.x0 + v, self.y0 + u) if self.transpose else (self.x0 + u, self.y0 + v)

    def angle(self, a: float) -> float:
        """A heading in the zone's axes as a heading on screen (degrees, clockwise)."""
        a = 180.0 - a if self.flip_u else a
        a = -a if self.flip_v else a
        a = 90.0 - a if self.transpose else a
        return (a + 180.0) % 360.0 - 180.0

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> tuple[tuple[float, float], ...]:
        return tuple(self.point(u, v) for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1)))


def random_frame(rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float, long_u: bool = True) -> Frame:
    """A frame over a rectangle with u along its long side (or either, when not `long_u`)."""
    transpose = (y1 - y0 > x1 - x0) if long_u else bool(rng.random() < 0.5)
    return Frame(x0, y0, x1, y1, transpose, bool(rng.random() < 0.5), bool(rng.random() < 0.5))


class Layout:
    """A scene being laid out: surfaces in drawing order, objects that never overlap."""

    def __init__(self, width: int, height: int, gsd: float, rng: np.random.Generator):
        self.width, self.height, self.gsd, self.rng = width, height, gsd, rng
        self.patches: list[Patch] = []
        self.objects: list[SceneObject] = []
        self.zones: list[Zone] = []
        self._shapes: list[shapely.Polygon] = []
        self._cells: dict[tuple[int, int], list[int]] = {}

    def m(self, metres: float) -> float:
        return metres / self.gsd

    def surface(self, surface: str, points) -> None:
        self.patches.append(Patch(surface, tuple((float(x), float(y)) for x, y in points)))

    def disc(self, surface: str, x: float, y: float, radius: float, sides: int = 12) -> None:
        self.surface(surface, [(x + radius * math.cos(2 * math.pi * k / sides), y + radius * math.sin(2 * math.pi * k / sides)) for k in range(sides)])

    def tree(self, x: float, y: float, radius: float) -> None:
        shift = 0.35 * radius
        self.disc("shadow", x + shift, y + shift, radius)
        self.disc("tree", x, y, radius)

    def size(self, label: str, low: float = 0.0, high: float = 1.0) -> tuple[float, float]:
        """(length, width) in pixels: a draw from the part [low, high] of the class's length range."""
        (lmin, lmax), (wmin, wmax), _ = CLASS_SPECS[label]
        length = lmin + self.rng.uniform(low, high) * (lmax - lmin)
        if label in ("plane", "storage tank"):
            return self.m(length), self.m(length)
        width = min(self.rng.uniform(wmin, wmax), length)
        return self.m(length), self.m(width)

    def colour(self, label: str) -> str:
        names = CLASS_COLOURS[label]
        return names[int(self.rng.integers(len(names)))]

    def _near(self, bounds) -> set[int]:
        x0, y0, x1, y1 = (int(v // _GRID) for v in bounds)
        return {i for cx in range(x0, x1 + 1) for cy in range(y0, y1 + 1) for i in self._cells.get((cx, cy), ())}

    def place(
        self,
        frame: Frame,
        label: str,
        u: float,
        v: float,
        length: float,
        width: float,
        heading: float,
        colour: str | None = None,
        within: shapely.Geometry | None = None,
        gap_m: float = 0.6,
    ) -> bool:
        """Put an object at (u, v) of a frame, heading in the frame's axes, if it lies inside
        the scene (and `within`, when given) and keeps `gap_m` from every object placed."""
        x, y = frame.point(u, v)
        obj = SceneObject(label, float(x), float(y), float(length), float(width), float(frame.angle(heading)),
                          PALETTE[colour or self.colour(label)])
        shape = shapely.Polygon(obj.box())
        x0, y0, x1, y1 = shape.bounds
        if x0 < 1 or y0 < 1 or x1 > self.width - 1 or y1 > self.height - 1:
            return False
        if within is not None and not within.contains(shape):
            return False
        gap = self.m(gap_m)
        grown = (x0 - gap, y0 - gap, x1 + gap, y1 + gap)
        if any(self._shapes[i].distance(shape) < gap for i in self._near(grown)):
            return False
        index = len(self.objects)
        self.objects.append(obj)
        self._shapes.append(shape)
        for cx in range(int(x0 // _GRID), int(x1 // _GRID) + 1):
            for cy in range(int(y0 // _GRID), int(y1 // _GRID) + 1):
                self._cells.setdefault((cx, cy), []).append(index)
        return True

    def scene(self, seed: int, background: str) -> Scene:
        return Scene(self.width, self.height, self.gsd, seed, tuple(self.objects), None, (), tuple(self.patches), background, tuple(self.zones))


def _region(frame: Frame, u0: float, v0: float, u1: float, v1: float) -> shapely.Polygon:
    return shapely.Polygon(frame.rect(u0, v0, u1, v1))


def _jitter(rng: np.random.Generator, degrees: float) -> float:
    return float(rng.normal(0.0, degrees))


# --- the five kinds -------------------------------------------------------------------------


def airport(layout: Layout, frame: Frame, max_planes: int | None = None) -> None:
    """Runway, taxiway, apron with rows of planes and service vehicles, terminal buildings."""
    rng, m = layout.rng, layout.m
    U, V = frame.U, frame.V
    layout.surface("grass", frame.rect(0, 0, U, V))
    apron_v0 = m(8)
    if V > m(170):
        runway = (V * 0.06, V * 0.06 + m(40))
        layout.surface("asphalt", frame.rect(U * 0.02, runway[0], U * 0.98, runway[1]))
        mid = (runway[0] + runway[1]) / 2
        for u in np.arange(U * 0.05, U * 0.95 - m(20), m(45)):
            layout.surface("marking", frame.rect(u, mid - m(0.6), u + m(20), mid + m(0.6)))
        taxi = (runway[1] + m(22), runway[1] + m(40))
        layout.surface("asphalt", frame.rect(U * 0.06, taxi[0], U * 0.94, taxi[1]))
        for u in np.linspace(U * 0.1, U * 0.9, 3):
            layout.surface("asphalt", frame.rect(u - m(9), runway[1], u + m(9), taxi[0]))
        apron_v0 = taxi[1]
    apron_v1 = V - m(30) if V > m(120) else V - m(6)
    apron_u0, apron_u1 = U * 0.06, U * 0.94
    layout.surface("concrete", frame.rect(apron_u0, apron_v0, apron_u1, apron_v1))
    apron = _region(frame, apron_u0, apron_v0, apron_u1, apron_v1)
    span = m(42)
    rows = max(1, int((apron_v1 - apron_v0 - m(10)) // (span * 1.35)))
    planes = 0
    for row in range(rows):
        v = apron_v0 + m(6) + span * (0.5 + 1.35 * row)
        for u in np.arange(apron_u0 + span * 0.6, apron_u1 - span * 0.5, span * 1.2):
            if rng.random() < 0.15 or planes == max_planes:
                continue
            length, width = layout.size("plane")
            heading = (90.0 if row % 2 == 0 else -90.0) + _jitter(rng, 4)
            if layout.place(frame, "plane", u + rng.uniform(-m(2), m(2)), v, length, width, heading, within=apron):
                planes += 1
                for _ in range(int(rng.integers(0, 3))):
                    label = "small vehicle" if rng.random() < 0.6 else "large vehicle"
                    vl, vw = layout.size(label)
                    side = rng.choice([-1.0, 1.0])
                    layout.place(frame, label, u + side * rng.uniform(0.55, 0.75) * span, v + rng.uniform(-0.4, 0.4) * span,
                                 vl, vw, float(rng.choice([0.0, 90.0])) + _jitter(rng, 5), within=apron)
    if V > m(120):  # terminal buildings along the far edge
        for u in np.arange(U * 0.08, U * 0.9, m(48)):
            length, width = layout.size("building", 0.6, 1.0)
            layout.place(frame, "building", u + length / 2, V - m(16), length, width, _jitter(rng, 1), gap_m=2)


def harbor(layout: Layout, frame: Frame) -> None:
    """Water with piers and moored ships; a quay with trucks; a yard with tanks and warehouses."""
    rng, m = layout.rng, layout.m
    U, V = frame.U, frame.V
    shore = V * rng.uniform(0.35, 0.5)
    layout.surface("gravel", frame.rect(0, 0, U, shore - m(22)))
    layout.surface("concrete", frame.rect(0, shore - m(22), U, shore))
    layout.surface("water", frame.rect(0, shore, U, V))
    water = _region(frame, 0, shore, U, V)
    piers = []
    for u in np.arange(m(45), U - m(30), m(rng.uniform(85, 110))):
        length = min(m(rng.uniform(60, 140)), (V - shore) * 0.8)
        pier = (u - m(6), shore - m(1), u + m(6), shore + length)
        layout.surface("concrete", frame.rect(*pier))
        piers.append(pier)
    open_water = water.difference(shapely.union_all([_region(frame, *p) for p in piers])) if piers else water
    for u0, _, u1, v1 in piers:
        for side in (-1.0, 1.0):
            if rng.random() < 0.35:
                continue
            length, width = layout.size("ship")
            u = (u0 + u1) / 2 + side * ((u1 - u0) / 2 + width / 2 + m(2.5))
            v = shore + m(4) + length / 2 + rng.uniform(0, max(0.0, v1 - shore - length - m(4)))
            layout.place(frame, "ship", u, v, length, width, 90.0 + _jitter(rng, 2), within=open_water, gap_m=2)
    for _ in range(int(rng.integers(1, 4))):
        length, width = layout.size("ship")
        layout.place(frame, "ship", rng.uniform(0, U), rng.uniform(shore + length, V), length, width, rng.uniform(-180, 180),
                     within=open_water, gap_m=4)
    quay = _region(frame, 0, shore - m(22), U, shore)
    for u in np.arange(m(10), U - m(10), m(rng.uniform(30, 60))):
        length, width = layout.size("large vehicle")
        layout.place(frame, "large vehicle", u, shore - m(11) + rng.uniform(-m(4), m(4)), length, width, _jitter(rng, 3), within=quay)
    yard = _region(frame, 0, 0, U, shore - m(24))
    _tank_farm(layout, frame, 0, 0, U * rng.uniform(0.3, 0.5), shore - m(26), yard)
    for u in np.arange(U * 0.55, U - m(20), m(rng.uniform(45, 60))):
        length, width = layout.size("building", 0.5, 1.0)
        layout.place(frame, "building", u, (shore - m(24)) / 2, length, width, _jitter(rng, 1), within=yard, gap_m=3)
        length, width = layout.size("small vehicle")
        layout.place(frame, "small vehicle", u + rng.uniform(-m(10), m(10)), (shore - m(24)) / 2 + m(18), length, width,
                     90.0 + _jitter(rng, 3), within=yard)


def _tank_farm(layout: Layout, frame: Frame, u0: float, v0: float, u1: float, v1: float, within: shapely.Geometry) -> None:
    """A grid of storage tanks of one size, most of one colour."""
    rng, m = layout.rng, layout.m
    diameter, _ = layout.size("storage tank")
    pitch = diameter + m(rng.uniform(5, 12))
    main = layout.colour("storage tank")
    for v in np.arange(v0 + m(4) + diameter / 2, v1 - diameter / 2, pitch):
        for u in np.arange(u0 + m(4) + diameter / 2, u1 - diameter / 2, pitch):
            if rng.random() < 0.2:
                continue
            colour = main if rng.random() < 0.8 else None
            layout.place(frame, "storage tank", u, v, diameter, diameter, 0.0, colour, within=within)


def industrial_area(layout: Layout, frame: Frame) -> None:
    """A road with trucks between a tank farm and warehouses; a small car park."""
    rng, m = layout.rng, layout.m
    U, V = frame.U, frame.V
    layout.surface("gravel", frame.rect(0, 0, U, V))
    road_v = V * rng.uniform(0.4, 0.6)
    layout.surface("asphalt", frame.rect(0, road_v - m(6), U, road_v + m(6)))
    road = _region(frame, 0, road_v - m(6), U, road_v + m(6))
    for u in np.arange(m(15), U - m(15), m(rng.uniform(35, 80))):
        length, width = layout.size("large vehicle")
        lane = rng.choice([-1.0, 1.0]) * m(3)
        layout.place(frame, "large vehicle", u, road_v + lane, length, width, (0.0 if lane > 0 else 180.0) + _jitter(rng, 2), within=road)
    site = _region(frame, 0, 0, U, road_v - m(8))
    _tank_farm(layout, frame, m(4), m(4), U * rng.uniform(0.5, 0.75), road_v - m(10), site)
    yard = _region(frame, 0, road_v + m(8), U, V)
    lot_u1 = U * rng.uniform(0.2, 0.35)
    layout.surface("asphalt", frame.rect(m(4), road_v + m(10), lot_u1, V - m(4)))
    lot = _region(frame, m(4), road_v + m(10), lot_u1, V - m(4))
    _stall_rows(layout, frame, m(4), road_v + m(10), lot_u1, V - m(4), lot, rng.uniform(0.1, 0.3))
    for u in np.arange(lot_u1 + m(25), U - m(15), m(rng.uniform(45, 60))):
        for v in np.arange(road_v + m(28), V - m(15), m(rng.uniform(40, 55))):
            length, width = layout.size("building", 0.5, 1.0)
            layout.place(frame, "building", u, v, length, width, float(rng.choice([0.0, 90.0])) + _jitter(rng, 1), within=yard, gap_m=3)
            if rng.random() < 0.4:
                vl, vw = layout.size("large vehicle")
                layout.place(frame, "large vehicle", u + rng.uniform(-m(15), m(15)), v + m(17), vl, vw, _jitter(rng, 3), within=yard)


def _stall_rows(layout: Layout, frame: Frame, u0: float, v0: float, u1: float, v1: float, lot: shapely.Geometry, occupancy: float) -> None:
    """Double rows of painted stalls across a lot, some taken by cars (a bus row now and then)."""
    rng, m = layout.rng, layout.m
    stall_w, stall_d, aisle = m(2.7), m(5.2), m(6.5)
    v = v0 + m(1.5)
    while v + 2 * stall_d <= v1:
        large = rng.random() < 0.15
        width, depth = (m(4.2), m(15)) if large else (stall_w, stall_d)
        if v + 2 * depth > v1:
            break
        for half in (0, 1):
            top = v + half * depth
            for u in np.arange(u0 + m(1), u1 - width, width):
                layout.surface("marking", frame.rect(u, top, u + m(0.3), top + depth))
                if rng.random() < occupancy:
                    label = "large vehicle" if large else "small vehicle"
                    length, body = layout.size(label)
                    heading = (90.0 if half else -90.0) + _jitter(rng, 2)
                    layout.place(frame, label, u + width / 2, top + depth / 2, length, body, heading, within=lot, gap_m=0.3)
        v += 2 * depth + aisle


def parking_lot(layout: Layout, frame: Frame) -> None:
    """Asphalt lots with rows of stalls between grass and trees, an access road with traffic."""
    rng, m = layout.rng, layout.m
    U, V = frame.U, frame.V
    layout.surface("grass", frame.rect(0, 0, U, V))
    road_v = m(12)
    layout.surface("asphalt", frame.rect(0, road_v - m(5), U, road_v + m(5)))
    road = _region(frame, 0, road_v - m(5), U, road_v + m(5))
    for u in np.arange(m(10), U - m(10), m(rng.uniform(25, 60))):
        length, width = layout.size("small vehicle")
        layout.place(frame, "small vehicle", u, road_v + rng.choice([-1.0, 1.0]) * m(2.3), length, width, _jitter(rng, 2), within=road)
    u = m(6)
    while u < U - m(30):
        lot_w = min(m(rng.uniform(30, 60)), U - u - m(6))
        v = road_v + m(10)
        while v < V - m(25):
            lot_d = min(m(rng.uniform(25, 50)), V - v - m(4))
            layout.surface("asphalt", frame.rect(u, v, u + lot_w, v + lot_d))
            lot = _region(frame, u, v, u + lot_w, v + lot_d)
            _stall_rows(layout, frame, u, v, u + lot_w, v + lot_d, lot, rng.uniform(0.05, 0.22))
            for _ in range(int(rng.integers(0, 4))):
                layout.tree(u + rng.uniform(0, lot_w), v + lot_d + m(rng.uniform(2, 5)), m(rng.uniform(2, 4)))
            v += lot_d + m(rng.uniform(8, 16))
        u += lot_w + m(rng.uniform(8, 20))
    if rng.random() < 0.5:
        length, width = layout.size("building", 0.6, 1.0)
        layout.place(frame, "building", U - m(25), road_v + m(30), length, width, 90.0 + _jitter(rng, 1), gap_m=3)


def residential_area(layout: Layout, frame: Frame) -> None:
    """Streets lined with houses in gardens, cars at the kerb and in driveways, trees, pools."""
    rng, m = layout.rng, layout.m
    U, V = frame.U, frame.V
    layout.surface("grass", frame.rect(0, 0, U, V))
    block = m(rng.uniform(70, 95))
    streets = list(np.arange(block * rng.uniform(0.3, 0.7), V, block))
    for v in streets:
        layout.surface("asphalt", frame.rect(0, v - m(4), U, v + m(4)))
    paved = [_region(frame, 0, v - m(5), U, v + m(5)) for v in streets]
    if U > m(150):
        cross = U * rng.uniform(0.3, 0.7)
        layout.surface("asphalt", frame.rect(cross - m(4), 0, cross + m(4), V))
        paved.append(_region(frame, cross - m(5), 0, cross + m(5), V))
    gardens = _region(frame, 0, 0, U, V).difference(shapely.union_all(paved)) if paved else None
    for v in streets:
        street = _region(frame, 0, v - m(4), U, v + m(4))
        for side in (-1.0, 1.0):
            u = m(rng.uniform(4, 15))
            while u < U - m(10):
                plot = m(rng.uniform(22, 32))
                length, width = layout.size("building", 0.0, 0.3)
                setback = m(rng.uniform(6, 10)) + width / 2 + m(4)
                hv = v + side * setback
                if layout.place(frame, "building", u + plot / 2, hv, length, width, _jitter(rng, 1.5), within=gardens, gap_m=3):
                    if rng.random() < 0.3:
                        cl, cw = layout.size("small vehicle")
                        layout.place(frame, "small vehicle", u + plot / 2 + rng.uniform(-m(8), m(8)), v + side * m(2.6), cl, cw,
                                     (0.0 if side > 0 else 180.0) + _jitter(rng, 2), within=street, gap_m=0.8)
                    if rng.random() < 0.25:
                        cl, cw = layout.size("small vehicle")
                        layout.surface("concrete", frame.rect(u + plot - m(6), v + side * m(4), u + plot - m(2), hv))
                        layout.place(frame, "small vehicle", u + plot - m(4), v + side * (m(4) + cl / 2 + m(1)), cl, cw,
                                     90.0 + _jitter(rng, 2), gap_m=0.8)
                    back = hv + side * (width / 2 + m(rng.uniform(5, 9)))
                    if rng.random() < 0.15:
                        pu = u + plot * rng.uniform(0.25, 0.6)
                        layout.surface("water", frame.rect(pu, min(back, back + side * m(4)), pu + m(8), max(back, back + side * m(4))))
                    for _ in range(int(rng.integers(0, 3))):
                        layout.tree(*frame.point(u + rng.uniform(0, plot), back + side * m(rng.uniform(2, 8))), m(rng.uniform(2, 4)))
                u += plot


KIND_LAYOUTS = {
    "airport": airport,
    "harbor": harbor,
    "industrial area": industrial_area,
    "parking lot": parking_lot,
    "residential area": residential_area,
}


# --- scenes ---------------------------------------------------------------------------------


def _fill(layout: Layout, kind: str, x0: float, y0: float, x1: float, y1: float, **options) -> None:
    layout.zones.append(Zone(kind, float(x0), float(y0), float(x1), float(y1)))
    KIND_LAYOUTS[kind](layout, random_frame(layout.rng, x0, y0, x1, y1), **options)


def _town(layout: Layout) -> None:
    """Every kind once, in a grid of zones (two rows), in a shuffled order. The town's airfield
    has one plane parked: a question about "the plane" has one answer."""
    rng = layout.rng
    kinds = [str(k) for k in rng.permutation(KINDS)]
    columns = [(0, 3), (3, 5)]  # kinds per row: three above, two below
    split = layout.height * rng.uniform(0.45, 0.55)
    for (start, stop), (y0, y1) in zip(columns, ((0.0, split), (split, float(layout.height)))):
        count = stop - start
        for k, kind in enumerate(kinds[start:stop]):
            _fill(layout, kind, layout.width * k / count, y0, layout.width * (k + 1) / count, y1,
                  **({"max_planes": 1} if kind == "airport" else {}))


def _fields(layout: Layout) -> None:
    """A patchwork of crop, soil, grass and woods, and a few straight roads."""
    rng, m = layout.rng, layout.m

    def edges(length: float) -> list[float]:
        cuts = [0.0]
        while cuts[-1] < length:
            cuts.append(cuts[-1] + m(rng.uniform(80, 260)))
        return cuts

    surfaces, weights = ("crop", "soil", "grass", "forest"), (0.35, 0.2, 0.3, 0.15)
    xs, ys = edges(layout.width), edges(layout.height)
    for y0, y1 in zip(ys[:-1], ys[1:]):
        for x0, x1 in zip(xs[:-1], xs[1:]):
            layout.surface(str(rng.choice(surfaces, p=weights)), [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def _countryside(layout: Layout) -> None:
    """Fields and roads with a few sites far apart, each one object of a class no other site has."""
    rng, m = layout.rng, layout.m
    _fields(layout)
    for _ in range(int(rng.integers(1, 4))):
        frame = random_frame(rng, 0, 0, layout.width, layout.height, long_u=False)
        v = frame.V * rng.uniform(0.1, 0.9)
        layout.surface("asphalt", frame.rect(0, v - m(3.5), frame.U, v + m(3.5)))
        road = _region(frame, 0, v - m(3.5), frame.U, v + m(3.5))
        for u in np.arange(m(rng.uniform(50, 400)), frame.U, m(rng.uniform(150, 600))):
            length, width = layout.size("small vehicle")
            layout.place(frame, "small vehicle", u, v + rng.choice([-1.0, 1.0]) * m(1.8), length, width, _jitter(rng, 2), within=road)
    labels = list(rng.permutation(list(SITE_KINDS)))
    count = min(len(labels), max(2, int(layout.width * layout.height * layout.gsd**2 / 0.6e6)))
    placed: list[tuple[float, float, float]] = []
    for label in labels[:count]:
        for _ in range(50):
            side = m(rng.uniform(70, 120))
            x, y = rng.uniform(side, layout.width - side), rng.uniform(side, layout.height - side)
            if all(math.hypot(x - px, y - py) > 2.5 * (side + ps) for px, py, ps in placed):
                placed.append((x, y, side))
                _site(layout, label, x - side / 2, y - side / 2, x + side / 2, y + side / 2)
                break


def _site(layout: Layout, label: str, x0: float, y0: float, x1: float, y1: float) -> None:
    """A small place holding one object of `label` on the surface that goes with it."""
    rng, m = layout.rng, layout.m
    frame = random_frame(rng, x0, y0, x1, y1, long_u=False)
    U, V = frame.U, frame.V
    layout.zones.append(Zone(SITE_KINDS[label], float(x0), float(y0), float(x1), float(y1)))
    ground = {"plane": "concrete", "ship": "water", "storage tank": "gravel", "large vehicle": "asphalt", "building": "grass"}[label]
    layout.surface(ground, frame.rect(0, 0, U, V))
    area = _region(frame, 0, 0, U, V)
    if label == "ship":
        layout.surface("concrete", frame.rect(0, 0, U, m(10)))
        layout.surface("concrete", frame.rect(U * 0.5 - m(5), 0, U * 0.5 + m(5), V * 0.45))
        area = area.difference(_region(frame, 0, 0, U, m(12))).difference(_region(frame, U * 0.5 - m(6), 0, U * 0.5 + m(6), V * 0.5))
    if label == "large vehicle":
        for u in np.arange(m(3), U - m(4), m(4.2)):
            layout.surface("marking", frame.rect(u, m(3), u + m(0.3), m(18)))
    if label == "building":
        for _ in range(int(rng.integers(2, 6))):
            layout.tree(*frame.point(rng.uniform(0, U), rng.uniform(0, V)), m(rng.uniform(2, 4)))
    length, width = layout.size(label)
    for _ in range(40):
        heading = float(rng.choice([0.0, 90.0])) + _jitter(rng, 8) if label != "storage tank" else 0.0
        if layout.place(frame, label, rng.uniform(0.25, 0.75) * U, rng.uniform(0.3, 0.8) * V, length, width, heading, within=area, gap_m=2):
            return


def plan_layout(kind: str, width: int, height: int, gsd: float = WORLD_GSD, seed: int = 0) -> Scene:
    """A scene of one kind, a town of every kind, or countryside with sites."""
    if kind not in LAYOUTS:
        raise ValueError(f"unknown scene kind {kind!r}; one of {', '.join(LAYOUTS)}")
    layout = Layout(width, height, gsd, np.random.default_rng([seed, LAYOUTS.index(kind)]))
    if kind == "town":
        _town(layout)
    elif kind == "countryside":
        _countryside(layout)
    else:
        _fill(layout, kind, 0.0, 0.0, float(width), float(height))
    return layout.scene(seed, "grass")
