"""The table of labelled boxes that readers produce and metrics consume.

Ground truth and predictions share one shape: for every box, the image (or sample) it belongs
to, its class (normalised as the prompts spell it, so 'small-vehicle' == 'small vehicle'),
its corners, a score (1 when the source gives none), DOTA's difficult flag, and the order of
its line in the file it came from (which ranks predictions whose scores tie).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.geometry import min_area_rectangles


@dataclass(frozen=True)
class BoxTable:
    image: np.ndarray  # (N,) str: image name (file stem) or sample id
    label: np.ndarray  # (N,) str: normalised class name
    points: np.ndarray  # (N, 4, 2) float: corners as read (quadrilaterals)
    score: np.ndarray  # (N,) float
    difficult: np.ndarray  # (N,) bool
    line: np.ndarray  # (N,) int: line (or feature) order within its source
    bounds: np.ndarray  # (N, 4) float: xmin, ymin, xmax, ymax of the shape as read

    @classmethod
    def build(cls, image, label, points, score=None, difficult=None, line=None, bounds=None) -> BoxTable:
        points = np.asarray(points, dtype=float).reshape(-1, 4, 2)
        n = len(points)
        if bounds is None:
            bounds = np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1) if n else np.zeros((0, 4))
        return cls(
            image=np.asarray(image, dtype=object).reshape(n),
            label=np.asarray(label, dtype=object).reshape(n),
            points=points,
            score=np.ones(n) if score is None else np.asarray(score, dtype=float).reshape(n),
            difficult=np.zeros(n, dtype=bool) if difficult is None else np.asarray(difficult, dtype=bool).reshape(n),
            line=np.arange(n) if line is None else np.asarray(line, dtype=np.int64).reshape(n),
            bounds=np.asarray(bounds, dtype=float).reshape(n, 4),
        )

    @classmethod
    def empty(cls) -> BoxTable:
        return cls.build([], [], np.zeros((0, 4, 2)))

    @classmethod
    def concat(cls, tables: list[BoxTable]) -> BoxTable:
        if not tables:
            return cls.empty()
        return cls(**{name: np.concatenate([getattr(t, name) for t in tables]) for name in cls.__dataclass_fields__})

    def __len__(self) -> int:
        return len(self.points)

    def take(self, index) -> BoxTable:
        """The boxes at an index array or boolean mask, in that order."""
        return BoxTable(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})

    def rectangles(self) -> np.ndarray:
        """Minimum-area rotated rectangles of the quadrilaterals: what the AP_nc protocol
        compares (a model's polygon answer and DOTA's hand-drawn truth are both rectified)."""
        return min_area_rectangles(self.points)

    def images(self) -> list[str]:
        return sorted(set(self.image.tolist()))

    def labels(self) -> list[str]:
        return sorted(set(self.label.tolist()))
