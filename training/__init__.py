"""LIR training recipe (outside the installed package): train.py, degradations.py."""
