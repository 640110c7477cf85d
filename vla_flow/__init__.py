"""vla-flow: train a rectified-flow VLA policy on LIBERO and evaluate it closed loop.

This package holds only what ties the stages together: the CLI, the typed-config loader and the
user-facing error type. The stages are the top-level packages envs -> train -> policy -> eval -> reports.
"""
__version__ = "0.1.0"
