"""Objective comparison (MLM, MLM+NSP, causal LM at matched FLOPs): sweep.py, report.py."""
