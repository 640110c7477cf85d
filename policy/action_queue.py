"""The one action-chunk queue: the policy predicts a chunk of H actions, the robot executes the first
``n_action_steps`` of them one per control step, then the policy is asked again.

Used by the closed-loop rollouts (``eval/rollout.py``, one queue per live episode) and by Python users
driving one env themselves (``ActionQueue(n, policy).select_action(...)``). Numpy only, so the rollout loop
imports no torch through it.

Shapes: a chunk is (H, A) for one episode or (B, H, A) for a batch; ``pop()`` returns (A,) or (B, A).
Optionally, ``hold`` copies of a held action go first: with a latency budget the previous action is held
while the policy "thinks" (``eval.config.EvalConfig.latency_budget``).
"""
from __future__ import annotations

from collections import deque

import numpy as np


class ActionQueue:
    """FIFO of per-step actions. ``push(chunk)`` enqueues ``chunk``'s first ``n_action_steps`` steps (time is
    axis 0 of (H, A), axis 1 of (B, H, A)); ``pop()`` takes the next; ``len()`` is what is left; ``reset()``
    empties it (call it per episode). ``policy``: optional, for ``select_action``."""

    def __init__(self, n_action_steps: int, policy=None, dtype=None):
        if int(n_action_steps) < 1:
            raise ValueError(f"n_action_steps: {n_action_steps}; expected >= 1")
        chunk_size = getattr(getattr(policy, "cfg", None), "chunk_size", None)
        if chunk_size is not None and n_action_steps > chunk_size:
            raise ValueError(f"n_action_steps: {n_action_steps}; expected 1..{chunk_size} (the policy's chunk)")
        self.n_action_steps = int(n_action_steps)
        self.policy = policy
        self.dtype = dtype
        self._queue: deque = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def reset(self) -> None:
        self._queue.clear()

    def push(self, chunk, hold: int = 0, hold_action=None) -> None:
        """Enqueue ``hold`` copies of ``hold_action`` (latency budget), then ``chunk[:n_action_steps]``."""
        chunk = np.asarray(chunk, dtype=self.dtype)
        if chunk.ndim not in (2, 3):
            raise ValueError(f"chunk: shape {chunk.shape}; expected (H, A) or (B, H, A)")
        for _ in range(int(hold)):
            self._queue.append(np.array(hold_action, dtype=self.dtype, copy=True))
        steps = chunk if chunk.ndim == 2 else np.swapaxes(chunk, 0, 1)  # (H, ...) either way
        self._queue.extend(steps[: self.n_action_steps])

    def pop(self) -> np.ndarray:
        return self._queue.popleft()

    def select_action(self, *args, **kwargs) -> np.ndarray:
        """With a policy: ``FlowPolicy.predict``'s arguments; predicts a new chunk when the queue is empty and
        returns (B, A) for this control step."""
        if self.policy is None:
            raise RuntimeError("ActionQueue.select_action needs a policy: ActionQueue(n, policy)")
        if not self._queue:
            self.push(self.policy.predict(*args, **kwargs))
        return self.pop()
