"""Training: datasets from labelled layers, co-training mixtures, fine-tuning, scratch models."""
