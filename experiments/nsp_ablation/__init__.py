"""NSP ablation: sweep.py runs it, report.py writes REPORT.md (see experiments/README.md)."""
