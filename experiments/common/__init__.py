"""What every experiment shares: the sweep runner, cross-evaluation, FLOPs, statistics, plots and
report pieces. The core library (flaxlm/) never imports anything from experiments/."""
