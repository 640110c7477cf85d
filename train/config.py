"""Training config: the ``train:`` section of an experiment YAML (``configs/*.yaml``).

Which feature path runs is said here, once: ``features: cached`` (frozen CLIP features computed once per
dataset + encoder, the fast path) or ``features: on_the_fly`` (images encoded every step; the only mode
that can apply image augmentation, ``augment: true``).
"""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Literal, Optional


@dataclass
class TrainConfig:
    """Optimisation, data and logging settings for ``vla-flow train``.

    Steps: ``epochs`` passes over the training split, each ``floor(n_train / batch_size)`` steps (the last
    partial batch is dropped so every step has the same global batch); ``max_steps`` caps the total.
    """

    data: list[str] = field(default_factory=list)  # HDF5 files; `vla-flow train --data` overrides
    val_fraction: float = 0.1  # share of demos (whole episodes) held out for validation
    image_key: str = "agentview_rgb"  # obs key of the camera the policy sees
    features: Literal["cached", "on_the_fly"] = "cached"
    augment: bool = False  # random-shift augmentation (on_the_fly only: cached features are fixed)
    cache_dir: Optional[str] = None  # None: next to each data file
    cache_batch_size: int = 32  # images per encoder call while building the cache

    # fine-tuning: a policy checkpoint whose weights AND normalization statistics start this run (the policy
    # config must equal this experiment's); None trains from scratch with statistics of this data's train split.
    # The statistics are kept so the weights see the inputs they were trained on; ``--resume`` wins over it.
    init_from: Optional[str] = None

    seed: int = 0
    batch_size: int = 64  # global batch (split evenly over DDP ranks)
    epochs: int = 100
    max_steps: Optional[int] = None
    lr: float = 3e-4
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays lr to lr * min_lr_ratio
    grad_clip: float = 1.0
    # autocast the trainable policy's forward/backward to bfloat16 (weights and optimizer stay float32): on CUDA,
    # and on a CPU with native bf16 (AMX / AVX512-BF16), where it halves the step time; elsewhere float32 with a
    # note, because emulated bf16 is slower (Benchmarks). Closed-loop quality against float32: not yet measured.
    bf16: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"

    log_every: int = 10  # steps between metrics rows
    val_every: int = 500  # steps between validation passes (0: only at the end)
    val_max_samples: int = 256  # validation subset (deterministic) to keep validation cheap
    save_every: int = 1000  # steps between step_<k>.pt checkpoints (last.pt is written with each)
    keep_last: int = 3  # step_<k>.pt files kept (0: keep all)

    def __post_init__(self):
        for f in fields(self):  # nan passes every `x <= 0` check below, so refuse it (and inf) first
            value = getattr(self, f.name)
            for x in (value if isinstance(value, list) else [value]):
                if isinstance(x, float) and not math.isfinite(x):
                    raise ValueError(f"{f.name}: {value} is not a finite number; give a real value, e.g. "
                                     f"{f.name}={_example(f)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: {self.val_fraction} must be in [0, 1)")
        if self.augment and self.features != "on_the_fly":
            raise ValueError("augment: true needs features: on_the_fly (cached features cannot be augmented)")
        for name in ("batch_size", "epochs", "cache_batch_size", "log_every", "save_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: {getattr(self, name)} must be > 0")
        for name in ("warmup_steps", "val_every", "val_max_samples", "keep_last"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: {getattr(self, name)} must be >= 0")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps: {self.max_steps} must be > 0 (or null)")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr: {self.lr} must be > 0 and weight_decay: {self.weight_decay} >= 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: {self.betas} must be two numbers in [0, 1)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio: {self.min_lr_ratio} must be in [0, 1]")
        if self.grad_clip <= 0:
            raise ValueError(f"grad_clip: {self.grad_clip} must be > 0")


def _example(f) -> str:
    """The field's default as an example value for an error message."""
    if f.default is not MISSING:
        return str(f.default)
    return str(f.default_factory()) if f.default_factory is not MISSING else "..."
