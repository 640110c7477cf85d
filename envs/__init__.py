"""The environment layer: the only code that imports LIBERO, robosuite and MuJoCo.

Importing any ``envs`` module first loads triton (when torch ships it) so that it is in the process
before Mesa's EGL/OSMesa driver. Measured here: a process that renders a LIBERO camera and *then* imports
open_clip/torchvision (which import triton through torch._dynamo) dies with a segfault inside triton's
import (two LLVM copies); the other order works. Training, evaluation and tests mix both in one process.
Cost: ~0.1 s.
"""
try:
    import triton  # noqa: F401
except ImportError:  # CPU-only torch builds have no triton: nothing to clash with
    pass
