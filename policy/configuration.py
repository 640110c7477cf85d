"""Typed configuration of the flow policy (the ``policy:`` section of an experiment YAML).

The defaults ARE the seed design: frozen CLIP ViT-B/16 (openai weights) pooled 512-D image feature, CLIP
text feature, joints MLP and end-effector-pose MLP (each -> 512), a fusion MLP -> 512 conditioning vector,
and a rectified-flow velocity head predicting ONE 7-D action per call (``chunk_size=1``), no gripper-state
input, no wrist camera. Everything beyond that is an option, off by default.

Offline note: ``vision.pretrained="openai"`` needs the weights file in the open_clip / Hugging Face cache
(see ``policy/encoders.py``); use ``"none"`` for random-init encoders (loud warning, recorded in the
checkpoint provenance).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Tiny open_clip model for tests only: same 224x224 input and 16x16 patches (196 tokens) as ViT-B/16,
# same tokenizer (77 tokens), 512-D output, but width 64 and 2 layers so it builds and runs in milliseconds.
TINY_MODEL = "tiny"
TINY_MODEL_CFG = {
    "embed_dim": 512,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@dataclass
class VisionConfig:
    """Frozen CLIP encoders (image and text towers of one open_clip model)."""

    # open_clip model name, or "tiny" (tests only).
    model: str = "ViT-B-16-quickgelu"
    # "openai" (open_clip tag; cached weights required offline), a path to a local weights file, or
    # "none" (random init: loud warning, recorded as random_init=True in the checkpoint).
    pretrained: str = "openai"
    # Seed for random init ("none"), so a checkpoint can rebuild the same random encoder without storing it.
    init_seed: int = 0
    # "pooled": the 512-D CLIP image embedding (seed design). "patch_tokens": the 196 patch tokens pooled by a
    # small trainable attention layer (a learned query cross-attending to them).
    image_feature: Literal["pooled", "patch_tokens"] = "pooled"
    # patch_tokens only: average-pool the 14x14 token grid to patch_grid x patch_grid before anything else
    # (7 -> 49 tokens: 4x less cache and attention-pool work; 14 keeps all 196 tokens). Part of the frozen
    # feature, so the feature cache stores the pooled grid.
    patch_grid: int = 14
    # Also feed the wrist camera through the same frozen image encoder.
    use_wrist_image: bool = False
    # Compute dtype of the frozen image tower (weights cast once). "bfloat16" is ~2.8x faster than float32 on a
    # CPU with native bf16 (AVX512-BF16 / AMX) and ~5.8x *slower* on one without (AVX2 only: emulated);
    # "auto" picks bfloat16 where CUDA or native CPU bf16 exists, else float32 (policy.encoders.resolve_dtype).
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("vision.model: empty; expected an open_clip model name such as ViT-B-16-quickgelu")
        if not self.pretrained:
            raise ValueError("vision.pretrained: empty; expected 'openai', 'none' or a path to a weights file")
        if self.patch_grid not in (1, 2, 7, 14):
            raise ValueError(f"vision.patch_grid: {self.patch_grid}; expected a divisor of 14 (1, 2, 7 or 14)")


@dataclass
class PolicyConfig:
    """The whole policy. ``chunk_size=1, n_action_steps=1`` reproduces the single-step seed design."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    action_dim: int = 7
    joints_dim: int = 7
    ee_pose_dim: int = 7  # [x, y, z, qx, qy, qz, qw]
    gripper_dim: int = 2
    # Feed the 2-D gripper finger state (an option beyond the seed design).
    use_gripper_state: bool = False
    # H actions predicted per call; the first n_action_steps of them are executed before the next call.
    chunk_size: int = 1
    n_action_steps: int = 1
    # Width of every input embedding and of the conditioning vector.
    embed_dim: int = 512
    # Velocity head: an MLP on [x_t (H*7), time embedding, conditioning].
    head_hidden_dim: int = 1024
    head_layers: int = 3
    time_embed_dim: int = 128
    # Distribution of the flow time t in training (see policy/flow.py for the convention and the reasoning).
    time_sampling: Literal["uniform", "logit_normal", "beta"] = "uniform"
    # Default solver steps for predict() when the caller does not pass num_flow_steps.
    num_flow_steps: int = 10
    # ODE solver and time grid of sampling (policy/flow.py): "euler" (1 network call per step) or "midpoint"
    # (2nd order, 2 calls per step); grid "uniform" (t = k/N), "cosine", "early" or "late". Sampling-only
    # settings: `vla-flow eval ... eval.solver=midpoint` overrides them without retraining.
    solver: Literal["euler", "midpoint"] = "euler"
    time_grid: Literal["uniform", "cosine", "early", "late"] = "uniform"
    # Scale of the initial noise at sampling (predict only; training, reflow pairs and the offline reference
    # always use N(0, I)). 1 samples the learned distribution; 0 starts every integration at x0 = 0, the
    # centre of the noise, and is deterministic: one Euler step then returns v(0, 0), the network's estimate
    # of the conditional mean E[action | observation] (the rectified-flow target at t=0 is E[x1|c] - x0), with
    # no leak of x0 through an imperfect v(x0, 0). Sampling-only: `eval.noise_scale=0` overrides it.
    noise_scale: float = 1.0
    # How actions / proprio are normalized; the gripper action dimension is never rescaled (-1 open, +1 close).
    normalization: Literal["mean_std", "min_max"] = "mean_std"
    # Index of the gripper command in the action vector (LIBERO: the last one).
    gripper_action_index: int = 6
    # Snap the predicted gripper command to -1/+1 (sign). Off in the seed design (clip only).
    binarize_gripper: bool = False
    # Heads of the attention pool over patch tokens (patch_tokens mode only).
    attn_pool_heads: int = 8

    def __post_init__(self) -> None:
        positive = ("action_dim", "joints_dim", "ee_pose_dim", "gripper_dim", "chunk_size", "n_action_steps",
                    "embed_dim", "head_hidden_dim", "head_layers", "time_embed_dim", "num_flow_steps",
                    "attn_pool_heads")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {value!r}; expected a positive integer")
        if self.n_action_steps > self.chunk_size:
            raise ValueError(f"n_action_steps: {self.n_action_steps} > chunk_size {self.chunk_size}; "
                             "expected n_action_steps <= chunk_size")
        if self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim: {self.time_embed_dim}; expected an even number")
        if self.embed_dim % self.attn_pool_heads:
            raise ValueError(f"attn_pool_heads: {self.attn_pool_heads} does not divide embed_dim {self.embed_dim}")
        if not 0 <= self.gripper_action_index < self.action_dim:
            raise ValueError(f"gripper_action_index: {self.gripper_action_index}; expected 0..{self.action_dim - 1}")
        from policy.flow import check_noise_scale, check_solver

        self.noise_scale = check_noise_scale(self.noise_scale)
        check_solver(self.num_flow_steps, self.solver, self.time_grid)
        if isinstance(self.vision, dict):  # built directly from a dict (e.g. a checkpoint)
            self.vision = VisionConfig(**self.vision)
