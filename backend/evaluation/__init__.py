"""Scoring checkpoints and detectors with the protocols RSCoVLM's paper uses.

Data flows one way: readers (`dota_io`, `layers`, `dataset`) turn files into `BoxTable`s and
text pairs; `overlaps` finds the pairs of boxes that can match; `detection`, `grounding` and
`text` compute the metrics; `report` writes them for people (table, plots) and machines (JSON);
`run` drives a checkpoint over a dataset folder first.
"""
