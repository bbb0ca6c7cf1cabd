"""`python -m flaxlm ...` is the `flaxlm` command."""

from flaxlm.cli import run

run()
