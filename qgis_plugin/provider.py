"""The `rscovlm` Processing provider: one algorithm per task, and the training algorithms."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider

from .algorithms import ALGORITHMS
from .resources import icon
from .training_algorithms import TRAINING_ALGORITHMS


class RSCoVLMProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "rscovlm"

    def name(self) -> str:
        return "RSCoVLM"

    def longName(self) -> str:  # noqa: N802
        return "RSCoVLM: ask a remote-sensing vision-language model about a raster"

    def icon(self):
        return icon("rscovlm")

    def loadAlgorithms(self) -> None:  # noqa: N802
        for algorithm in ALGORITHMS + TRAINING_ALGORITHMS:
            self.addAlgorithm(algorithm())
