"""The episode grid: keys (task, init state, N, seed), paired flow noise, and sharding by rank.

Pairing: every N of one (task, init state, seed) starts from the same simulator state (the init state is
indexed by the key, never by the worker slot) and draws the same flow noise: the noise stream is a
torch.Generator seeded from a hash of (suite, task, init state, seed), with N left out on purpose.
So a sweep over N compares the same episodes, and McNemar's paired test applies (reports/stats.py).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True, order=True)
class EpisodeKey:
    """One unit of work. Sorted task -> N -> seed -> init state: a worker keeps one task's env for many
    episodes, and episodes running at the same time share N, so they can share one batched policy call."""

    task_index: int
    flow_steps: int
    seed: int
    init_state: int
    suite: str = "libero_spatial"
    task: str = ""  # task name (for tables and video names); not part of identity beyond task_index

    @property
    def ident(self) -> tuple[str, int, int, int, int]:
        """The identity used for resume and dedup: (suite, task_index, init_state, flow_steps, seed)."""
        return (self.suite, self.task_index, self.init_state, self.flow_steps, self.seed)

    @property
    def pair_id(self) -> str:
        """Same for every N of one (task, init state, seed)."""
        return f"{self.suite}/{self.task_index}/{self.init_state}/{self.seed}"


def build_grid(suite: str, tasks: Iterable[tuple[int, str]], init_states: Iterable[int],
               flow_steps: Iterable[int], seeds: Iterable[int]) -> list[EpisodeKey]:
    """All keys, sorted (task, N, seed, init state). ``tasks`` is [(task_index, task_name)]."""
    keys = {EpisodeKey(ti, n, s, i, suite, name)
            for ti, name in tasks for i in init_states for s in seeds for n in flow_steps}
    return sorted(keys)


def noise_seed(key: EpisodeKey) -> int:
    """64-bit seed from sha256 of the pair id (stable across processes, Python versions and machines;
    Python's ``hash`` is salted per process, so it is not used)."""
    digest = hashlib.sha256(key.pair_id.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class NoiseStream:
    """Initial flow noise for successive policy calls of one episode: call k gets the k-th draw.

    Drawn on CPU in float32 so CPU and CUDA runs see the same noise. Shape per call (H, action_dim).
    """

    def __init__(self, key: EpisodeKey, horizon: int, action_dim: int = 7):
        import torch

        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(noise_seed(key))
        self._shape = (horizon, action_dim)

    def next(self) -> np.ndarray:
        import torch

        return torch.randn(self._shape, generator=self._gen, dtype=torch.float32).numpy()


def shard(keys: list[EpisodeKey], rank: int, world_size: int) -> list[EpisodeKey]:
    """Rank r takes keys r, r+W, r+2W, ... of the sorted grid: deterministic and balanced across tasks."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} / world size {world_size} is not a valid shard")
    return keys[rank::world_size]


def video_selected(mode: str, first_k: int, index: int) -> bool:
    """Whether to keep frames for the grid's ``index``-th episode (``failures`` keeps all, writes failures)."""
    if mode == "none":
        return False
    if mode == "first":
        return index < first_k
    return True
