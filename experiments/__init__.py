"""Reproducible ablations and comparisons built on flaxlm; see experiments/README.md."""
