"""What this machine's CPU kernels do, for tests whose expected outcome depends on it."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def gemm_row_invariant() -> bool:
    """True when a small matrix product gives each row the same bits whatever the other rows are.

    Most x86 MKL/oneDNN builds do (our padded fixed-shape policy calls rely on it); some CPUs and builds
    do not for tiny row counts (seen here on an AVX512 host without AMX: 1.5e-7 differences at 2 rows),
    and then ``check_batch_invariance`` must say so and the evaluator falls back to one row per call."""
    import torch

    torch.manual_seed(0)
    lin = torch.nn.Linear(7, 512)
    x = torch.randn(2, 7)
    with torch.inference_mode():
        return bool(torch.equal(lin(x)[1], lin(x[[1, 1]])[0]))
