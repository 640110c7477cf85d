"""Settings of ``vla-flow reflow`` (train/reflow.py), apart from it so that building the CLI's parser (which
reads these defaults) imports no torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReflowConfig:
    """Settings of ``vla-flow reflow`` (defaults: what the README's few-step experiment used)."""

    samples_per_frame: int = 16  # K noise draws x0 per training frame
    pair_steps: int = 20  # fine solver for the pairs: steps ...
    pair_solver: str = "midpoint"  # ... of this solver (20 midpoint steps = 40 network calls)
    steps: int = 4000  # reflow training steps (head only)
    distill_steps: int = 0  # then one-step distillation steps (t = 0 only); 0: none
    batch_size: int = 256
    lr: float = 1e-4
    time_sampling: str | None = None  # None: the teacher's policy.time_sampling
    seed: int = 0
    # torch intra-op threads for pair generation and training (0: torch's default). The head's matrices are
    # small: on a CPU shared with other jobs, 2 threads measured 15x slower per step than 1 (thread sync).
    threads: int = 1
    # The conditions come from the train split of --data, normalized with the teacher's own statistics, so any
    # frames of the teacher's suite and tasks will do. By default --data must be the teacher's training data (its
    # split's statistics equal the checkpoint's: a guard against passing the wrong files); true allows other
    # demos of the same tasks (a subset, or new layouts), recorded as data_matches_teacher: false in run.json.
    other_data: bool = False
    # The pairs' start: x0 = noise_scale * N(0, I). 0 pairs every condition with x0 = 0 and the teacher's
    # deterministic solution from it (one draw per frame: every draw would be the same), so the student's one
    # step from x0 = 0, v(0, 0 | c), is trained on exactly the teacher's fine solution from 0: one-step
    # distillation of the deterministic x0 = 0 path (the teacher's N=10 from 0 matched its N=10 from noise on
    # the suite, README). The student is saved with policy.noise_scale set to it, so `vla-flow eval` starts
    # where it was trained (eval.noise_scale overrides).
    noise_scale: float = 1.0

    def __post_init__(self):
        for name in ("samples_per_frame", "pair_steps", "steps", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)!r}; expected a positive integer")
        if self.distill_steps < 0 or self.threads < 0:
            raise ValueError(f"distill_steps: {self.distill_steps}, threads: {self.threads}; expected >= 0")
        from policy.flow import check_noise_scale

        self.noise_scale = check_noise_scale(self.noise_scale)
        if not self.lr > 0:
            raise ValueError(f"lr: {self.lr}; expected > 0")
        from policy import flow  # torch: imported when a config is validated, not by `vla-flow --help`

        flow.check_solver(self.pair_steps, self.pair_solver)
        if self.time_sampling is not None:
            flow.sample_time(1, self.time_sampling)  # raises on an unknown name
