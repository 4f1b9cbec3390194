"""Scoring checkpoints and detectors with the protocols RSCoVLM's paper uses.

Data flows one way: readers (`dota_io` for DOTA text files, `layers` for vector layers, chosen by
`sources`; `dataset` for a dataset split folder) turn files into `BoxTable`s (`boxes`) and text
pairs; `overlaps` finds, exactly, the pairs of boxes that can match; `detection`, `grounding`
and `text` compute the metrics and `protocols` applies them as a user runs them; `report`
writes tables, JSON and plots; `run` drives a checkpoint over a dataset split first.
`reference` is the DOTA devkit's per-pair loop that the benchmark and the tests compare against.
"""
