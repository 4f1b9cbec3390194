"""RSCoVLM backend: reads rasters, runs the model, answers with georeferenced features."""

__version__ = "0.1.0"
