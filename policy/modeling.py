"""The flow policy: frozen CLIP features + joints/pose (+gripper) MLPs -> fusion -> rectified-flow velocity head.

Two layers, as in LeRobot's policies: ``FlowPolicy`` (an nn.Module: normalization stats, ``compute_loss``,
``predict(..., num_flow_steps=N)``) and ``policy.action_queue.ActionQueue`` (the outer wrapper that executes
``n_action_steps`` of each predicted chunk and whose ``reset()`` empties the queue).

Shapes: B batch, H = chunk_size, A = 7 action dims, D = 512.
    image (B, 224, 224, 3) -> frozen CLIP -> pooled (B, 512) | patch tokens (B, 196, W) -> (B, D)
    instruction (B strings) -> frozen CLIP text (cached per string) -> (B, D)
    joints (B, 7) -> MLP -> (B, D); ee_pose (B, 7) -> MLP -> (B, D); [gripper (B, 2) -> MLP -> (B, D)]
    concat -> fusion MLP -> cond (B, D)
    velocity head v(x_t (B, H, A), t (B,), cond) -> (B, H, A); Euler over N steps from noise (policy/flow.py).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from policy import flow
from policy.configuration import PolicyConfig
from policy.encoders import IMAGE_SIZE, FrozenClip
from policy.guard import check_actions
from policy.normalize import Normalizer
from vla_flow.errors import UserError


class PolicyInputError(UserError, ValueError):
    """A predict()/compute_loss() input has the wrong shape, dtype or NaN values."""


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1]: (B,) -> (B, dim), frequencies 1..1000 (geometric)."""
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), dim // 2, device=t.device, dtype=torch.float32))
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(t.dtype)


class AttentionPool(nn.Module):
    """Patch tokens (B, N, W) -> (B, D): one learned query cross-attending to the (layer-normed) tokens."""

    def __init__(self, token_width: int, dim: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(token_width)
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)
        self.attn = nn.MultiheadAttention(dim, heads, kdim=token_width, vdim=token_width, batch_first=True)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.norm(tokens.to(self.query.dtype))
        out, _ = self.attn(self.query.expand(tokens.shape[0], -1, -1), kv, kv, need_weights=False)
        return self.out_norm(out[:, 0])


class VelocityHead(nn.Module):
    """v(x_t, t, cond): an MLP on [flattened x_t (H*A), sinusoidal time embedding, cond] -> (B, H, A)."""

    def __init__(self, horizon: int, action_dim: int, cond_dim: int, time_dim: int, hidden: int, layers: int):
        super().__init__()
        self.horizon, self.action_dim, self.time_dim = horizon, action_dim, time_dim
        dims = [horizon * action_dim + time_dim + cond_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(d_in, d_out), nn.SiLU()]
        blocks.append(nn.Linear(hidden, horizon * action_dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x_t.flatten(1), time_embedding(t, self.time_dim), cond], dim=-1)
        return self.net(h).view(-1, self.horizon, self.action_dim)

    def sampler(self, cond: torch.Tensor, num_steps: int, solver: str = "euler", time_grid: str = "uniform"):
        """The same function as ``forward`` for a fixed ``cond``, with the per-call work hoisted out of the
        solver loop: the cond part of the first layer (512 of its ~650 input columns) and the time embeddings
        of the solver's evaluation times (``flow.eval_times``) are computed once. Returns velocity_fn(x_t, t)
        for ``flow.integrate``; any other t is embedded on the fly (same result, slower)."""
        first = self.net[0]
        w_x_t, w_c_t, t_terms = self._first_layer_terms(num_steps, solver, time_grid)
        base = torch.addmm(first.bias, cond, w_c_t)  # (B, hidden)
        times = flow.eval_times(num_steps, solver, time_grid)  # built exactly as flow.integrate builds t
        step = {float(t): k for k, t in enumerate(torch.tensor(times, dtype=cond.dtype).tolist())}
        rest = self.net[1:]
        n_x = self.horizon * self.action_dim

        def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            k = step.get(float(t[0])) if bool((t == t[0]).all()) else None
            t_term = t_terms[k] if k is not None else \
                time_embedding(t, self.time_dim) @ first.weight[:, n_x:n_x + self.time_dim].t()
            h = torch.addmm(base + t_term, x_t.flatten(1), w_x_t)
            return rest(h).view(-1, self.horizon, self.action_dim)

        return velocity

    def _first_layer_terms(self, num_steps: int, solver: str, time_grid: str):
        """(w_x^T (H*A, hidden), w_c^T (cond, hidden), time terms (calls, hidden)) of the first layer.

        The x / time / cond blocks are column slices of the (hidden, in) weight, so a product with one reads
        strided rows: on a 2-core AMD EPYC (1 thread) the cond product took 302 us on the slice, the time
        terms 132 us, together ~1/4 of a whole N=1 loop. Without autograd (sampling, pair generation) they
        are kept as contiguous copies and, with the time terms per (N, solver, grid), reused until the
        weights change: the key holds the weight's storage and version counter, which every in-place update
        (optimizer step, ``load_state_dict``) bumps and every move (``.to``) replaces. With autograd on
        (training through the sampler) they are recomputed from the live weight every call."""
        first = self.net[0]
        n_x = self.horizon * self.action_dim
        times = flow.eval_times(num_steps, solver, time_grid)

        def blocks() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # w_x, w_t, w_c: (hidden, columns)
            return first.weight.split([n_x, self.time_dim, first.in_features - n_x - self.time_dim], dim=1)

        def time_terms(w_t_t: torch.Tensor) -> torch.Tensor:
            grid = torch.tensor(times, device=w_t_t.device, dtype=w_t_t.dtype)
            return time_embedding(grid, self.time_dim) @ w_t_t

        if torch.is_grad_enabled() and first.weight.requires_grad:
            w_x, w_t, w_c = blocks()
            return w_x.t(), w_c.t(), time_terms(w_t.t())
        w, b = first.weight, first.bias
        key = (w.data_ptr(), w._version, b.data_ptr(), b._version, w.dtype, w.device)
        cache = getattr(self, "_terms_cache", None)
        if cache is None or cache["key"] != key:
            # normal (not inference-mode) tensors, so that the copies serve any later mode; the detached
            # aliases pin the storages, so a data_ptr in the key is never another tensor's reused memory
            with torch.inference_mode(False), torch.no_grad():
                w_x, w_t, w_c = blocks()
                cache = {"key": key, "pin": (w.detach(), b.detach()), "w_x_t": w_x.t().contiguous(),
                         "w_c_t": w_c.t().contiguous(), "w_t_t": w_t.t().contiguous(), "times": {}}
            self._terms_cache = cache
        grid_key = (num_steps, solver, time_grid)
        if grid_key not in cache["times"]:
            with torch.inference_mode(False), torch.no_grad():
                cache["times"][grid_key] = time_terms(cache["w_t_t"])
        return cache["w_x_t"], cache["w_c_t"], cache["times"][grid_key]


class FlowPolicy(nn.Module):
    """The policy. ``set_stats`` (or a checkpoint) must provide normalization statistics before use."""

    def __init__(self, cfg: PolicyConfig, stats: dict | None = None):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.encoder = FrozenClip(cfg.vision)
        self.patch = cfg.vision.image_feature == "patch_tokens"
        make_img = (lambda: AttentionPool(self.encoder.token_width, d, cfg.attn_pool_heads)) if self.patch \
            else (lambda: nn.LayerNorm(self.encoder.embed_dim))
        self.image_proj = make_img()
        self.wrist_proj = make_img() if cfg.vision.use_wrist_image else None
        self.text_norm = nn.LayerNorm(self.encoder.embed_dim)
        self.joints_mlp = mlp(cfg.joints_dim, d, d)
        self.ee_pose_mlp = mlp(cfg.ee_pose_dim, d, d)
        self.gripper_mlp = mlp(cfg.gripper_dim, d, d) if cfg.use_gripper_state else None
        img_dim = d if self.patch else self.encoder.embed_dim
        n_images, n_proprio = 1 + int(cfg.vision.use_wrist_image), 2 + int(cfg.use_gripper_state)
        fused_in = img_dim * n_images + self.encoder.embed_dim + d * n_proprio
        self.fusion = mlp(fused_in, d, d)
        self.head = VelocityHead(cfg.chunk_size, cfg.action_dim, d, cfg.time_embed_dim, cfg.head_hidden_dim,
                                 cfg.head_layers)
        dims = {"actions": cfg.action_dim, "joints": cfg.joints_dim, "ee_pose": cfg.ee_pose_dim}
        if cfg.use_gripper_state:
            dims["gripper"] = cfg.gripper_dim
        self.normalizer = Normalizer(dims, cfg.normalization, {"actions": [cfg.gripper_action_index]})
        if stats is not None:
            self.set_stats(stats)
        self.last_timings: dict[str, float] = {}

    # ---------------------------------------------------------------- bookkeeping
    @property
    def device(self) -> torch.device:
        return self.head.net[0].weight.device

    @property
    def provenance(self) -> dict:
        return dict(self.encoder.provenance)

    def set_stats(self, stats: dict) -> None:
        self.normalizer.set_stats(stats)

    def num_trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ---------------------------------------------------------------- features
    def encode_images(self, images) -> torch.Tensor:
        """Frozen features of (B, 224, 224, 3) images: pooled (B, 512) or patch tokens (B, 196, W).
        This is exactly what a feature cache stores and ``compute_loss`` accepts as ``image_feat``."""
        images = _check_images(_as_tensor(images, "images"), "images")
        return self.encoder.encode_images(images, self.cfg.vision.image_feature, self.cfg.vision.patch_grid)

    def encode_text(self, instructions: list[str]) -> torch.Tensor:
        """(B,) instructions -> (B, 512); each distinct string runs the text tower once (cached)."""
        if isinstance(instructions, str) or not all(isinstance(s, str) for s in instructions):
            raise PolicyInputError("instructions: expected a list of strings, one per batch row")
        return self.encoder.encode_text(list(instructions))

    def condition(self, image_feat, text_feat, joints, ee_pose, gripper=None, wrist_feat=None) -> torch.Tensor:
        """Fuse features and RAW proprio (normalized here) into the conditioning vector (B, D)."""
        norm = self.normalizer
        # Cached features may be float16/bfloat16: project them in float32.
        parts = [self.image_proj(image_feat.to(self.device, torch.float32))]
        if self.wrist_proj is not None:
            if wrist_feat is None:
                raise PolicyInputError("wrist image required: policy.vision.use_wrist_image is true")
            parts.append(self.wrist_proj(wrist_feat.to(self.device, torch.float32)))
        parts.append(self.text_norm(text_feat.to(self.device).float()))
        parts.append(self.joints_mlp(norm.normalize("joints", joints.to(self.device).float())))
        parts.append(self.ee_pose_mlp(norm.normalize("ee_pose", ee_pose.to(self.device).float())))
        if self.gripper_mlp is not None:
            if gripper is None:
                raise PolicyInputError("gripper state (B, 2) required: policy.use_gripper_state is true")
            parts.append(self.gripper_mlp(norm.normalize("gripper", gripper.to(self.device).float())))
        return self.fusion(torch.cat(parts, dim=-1))

    def _batch_features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        image_feat = batch.get("image_feat")
        if image_feat is None:
            image_feat = self.encode_images(batch["image"])
        wrist_feat = batch.get("wrist_feat")
        if wrist_feat is None and self.wrist_proj is not None and "wrist_image" in batch:
            wrist_feat = self.encode_images(batch["wrist_image"])
        text_feat = batch.get("text_feat")
        if text_feat is None:
            text_feat = self.encode_text(batch["instructions"])
        return image_feat, wrist_feat, text_feat

    # ---------------------------------------------------------------- training
    def compute_loss(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Rectified-flow loss. batch: image_feat (or image), text_feat (or instructions), joints (B,7),
        ee_pose (B,7), [gripper (B,2)], [wrist_feat | wrist_image], actions (B,H,7) raw, [action_mask (B,H)].
        Optional ``noise`` (B,H,7) and ``t`` (B,) make it deterministic (validation). Returns (loss, metrics)."""
        image_feat, wrist_feat, text_feat = self._batch_features(batch)
        cond = self.condition(image_feat, text_feat, _as_tensor(batch["joints"], "joints"),
                              _as_tensor(batch["ee_pose"], "ee_pose"), _opt(batch.get("gripper"), "gripper"),
                              wrist_feat)
        actions = _as_tensor(batch["actions"], "actions").to(self.device).float()
        if actions.dim() == 2 and self.cfg.chunk_size == 1:
            actions = actions[:, None]
        expect = (actions.shape[0], self.cfg.chunk_size, self.cfg.action_dim)
        if tuple(actions.shape) != expect:
            raise PolicyInputError(f"actions: shape {tuple(actions.shape)}, expected {expect} (B, chunk_size, 7)")
        x1 = self.normalizer.normalize("actions", actions)
        bsz = x1.shape[0]
        x0 = batch.get("noise")
        x0 = torch.randn(x1.shape, generator=generator).to(x1) if x0 is None else _as_tensor(x0, "noise").to(x1)
        t = batch.get("t")
        t = flow.sample_time(bsz, self.cfg.time_sampling, generator=generator).to(x1) if t is None \
            else _as_tensor(t, "t").to(x1)
        v = self.head(flow.interpolate(x0, x1, t), t, cond)
        err = (v - flow.target(x0, x1)).pow(2)
        mask = batch.get("action_mask")
        if mask is None:
            loss = err.mean()
        else:
            m = _as_tensor(mask, "action_mask").to(x1).reshape(bsz, -1, 1)
            loss = (err * m).sum() / (m.sum() * err.shape[-1]).clamp_min(1.0)
        return loss, {"loss": float(loss.detach()), "t_mean": float(t.mean())}

    # ---------------------------------------------------------------- sampling
    def sample_normalized(self, cond: torch.Tensor, num_flow_steps: int, noise: torch.Tensor,
                          solver: str | None = None, time_grid: str | None = None,
                          record: list | None = None) -> torch.Tensor:
        """Integrate the head from ``noise`` (B, H, 7) with ``solver`` on ``time_grid`` (None: the config's);
        returns the NORMALIZED endpoint x1 (B, H, 7), unclipped (what reflow pairs and offline sweeps use)."""
        solver = self.cfg.solver if solver is None else solver
        grid = self.cfg.time_grid if time_grid is None else time_grid
        try:
            flow.check_solver(num_flow_steps, solver, grid)
        except ValueError as exc:
            raise PolicyInputError(str(exc)) from None
        fn = self.head.sampler(cond, num_flow_steps, solver, grid)
        return flow.integrate(fn, noise, num_flow_steps, solver, grid, record=record)

    def sample_actions(self, cond: torch.Tensor, num_flow_steps: int, noise: torch.Tensor,
                       solver: str | None = None, time_grid: str | None = None) -> torch.Tensor:
        """Integrate the head from ``noise`` (B, H, 7) (``sample_normalized``); returns RAW actions clipped to
        [-1, 1]."""
        x1 = self.sample_normalized(cond, num_flow_steps, noise, solver, time_grid)
        actions = self.normalizer.unnormalize("actions", x1).clamp(-1.0, 1.0)
        if self.cfg.binarize_gripper:
            g = self.cfg.gripper_action_index
            actions[..., g] = torch.where(actions[..., g] >= 0, 1.0, -1.0)
        return actions

    def make_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Initial noise (B, H, 7), always drawn on CPU so one seed gives the same noise on every device."""
        return torch.randn((batch, self.cfg.chunk_size, self.cfg.action_dim), generator=generator)

    @torch.inference_mode()
    def predict(self, images, instructions, joints, ee_pose, gripper=None, num_flow_steps: int | None = None,
                noise=None, generator: torch.Generator | None = None, wrist_images=None,
                pad_to: int | None = None, solver: str | None = None, time_grid: str | None = None) -> np.ndarray:
        """Actions (B, H, 7) float32 numpy in [-1, 1] from a batch of raw observations (numpy or torch).

        images (B, 224, 224, 3) uint8 (or float in [0, 1]), instructions: B strings (or one string for all),
        joints (B, 7), ee_pose (B, 7) [x, y, z, qx, qy, qz, qw], gripper (B, 2) if use_gripper_state.
        noise (B, H, 7) or a CPU ``generator`` fixes the initial noise (same seed -> same noise for every N);
        either is multiplied by ``cfg.noise_scale`` (1 by default; 0 gives the deterministic x0 = 0 path).
        pad_to: pad the batch (repeating the last row) to this many rows, so that every call has the same
        shape; the padded rows are dropped. solver / time_grid: None uses ``cfg.solver`` / ``cfg.time_grid``.
        Timings in ``self.last_timings`` (ms).
        """
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        steps = self.cfg.num_flow_steps if num_flow_steps is None else num_flow_steps
        if not isinstance(steps, int) or steps < 1:
            raise PolicyInputError(f"num_flow_steps: {steps!r}; expected a positive integer")
        t0 = time.perf_counter()
        x = self._check_inputs(images, instructions, joints, ee_pose, gripper, wrist_images, noise, generator)
        bsz = x["images"].shape[0]
        if pad_to is not None:
            x = _pad_batch(x, pad_to)
        images, instructions, joints, ee_pose, gripper, wrist, noise = (
            x[k] for k in ("images", "instructions", "joints", "ee_pose", "gripper", "wrist", "noise"))
        sync()
        t1 = time.perf_counter()
        image_feat = self.encode_images(images)
        wrist_feat = None if wrist is None else self.encode_images(wrist)
        text_feat = self.encode_text(instructions)
        sync()
        t2 = time.perf_counter()
        cond = self.condition(image_feat, text_feat, joints, ee_pose, gripper, wrist_feat)
        sync()
        t3 = time.perf_counter()
        noise = noise.to(self.device) * self.cfg.noise_scale  # the given or drawn noise, scaled (cfg.noise_scale)
        actions = self.sample_actions(cond, steps, noise, solver, time_grid)
        out = actions[:bsz].float().cpu().numpy()
        t4 = time.perf_counter()
        self.last_timings = {"encode_ms": (t2 - t1) * 1e3, "fusion_ms": (t3 - t2) * 1e3,
                             "flow_ms": (t4 - t3) * 1e3, "total_ms": (t4 - t0) * 1e3}
        return check_actions(out, self)  # the one output check (policy/guard.py): NaN/inf never leave


    def _check_inputs(self, images, instructions, joints, ee_pose, gripper, wrist_images, noise, generator) -> dict:
        """Validate predict() inputs (shapes, dtypes, NaN) and draw the noise; returns torch tensors."""
        images = _check_images(_as_tensor(images, "images"), "images")
        bsz = images.shape[0]
        instructions = [instructions] * bsz if isinstance(instructions, str) else list(instructions)
        if len(instructions) != bsz or not all(isinstance(s, str) for s in instructions):
            raise PolicyInputError(f"instructions: {len(instructions)} strings for a batch of {bsz}")
        cfg = self.cfg
        x = {"images": images, "instructions": instructions,
             "joints": _check_vec(joints, "joints", bsz, cfg.joints_dim),
             "ee_pose": _check_vec(ee_pose, "ee_pose", bsz, cfg.ee_pose_dim,
                                   hint=" ([x, y, z, qx, qy, qz, qw], quaternion xyzw; not axis-angle)"),
             "gripper": None if gripper is None else _check_vec(gripper, "gripper", bsz, cfg.gripper_dim),
             "wrist": None if wrist_images is None else _check_images(_as_tensor(wrist_images, "wrist_images"),
                                                                       "wrist_images")}
        noise = self.make_noise(bsz, generator) if noise is None else _as_tensor(noise, "noise").float()
        if tuple(noise.shape) != (bsz, cfg.chunk_size, cfg.action_dim):
            raise PolicyInputError(f"noise: shape {tuple(noise.shape)}, expected {(bsz, cfg.chunk_size, cfg.action_dim)}")
        x["noise"] = noise
        return x

# -------------------------------------------------------------------- input checks
def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        arr = np.ascontiguousarray(x)
        return torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    except (TypeError, ValueError) as exc:
        raise PolicyInputError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}") from exc


def _opt(x, name: str) -> torch.Tensor | None:
    return None if x is None else _as_tensor(x, name)


def _check_images(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() != 4 or tuple(x.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise PolicyInputError(f"{name}: shape {tuple(x.shape)}, expected (B, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) "
                               "channels-last RGB (resize to 224x224 before calling)")
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise PolicyInputError(f"{name}: dtype {x.dtype}, expected uint8 or float in [0, 1]")
        if not torch.isfinite(x).all():
            raise PolicyInputError(f"{name}: contains NaN/inf values")
    return x


def _check_vec(x, name: str, batch: int, dim: int, hint: str = "") -> torch.Tensor:
    t = _as_tensor(x, name)
    if t.dim() != 2 or t.shape[0] != batch or t.shape[1] != dim:
        raise PolicyInputError(f"{name}: shape {tuple(t.shape)}, expected ({batch}, {dim}){hint}")
    t = t.float()
    if not torch.isfinite(t).all():
        raise PolicyInputError(f"{name}: contains NaN/inf values")
    return t


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([x, x[-1:].expand(n - x.shape[0], *x.shape[1:])]) if n > x.shape[0] else x


def _pad_batch(x: dict, n: int) -> dict:
    """Repeat the last row until the batch has ``n`` rows (fixed shapes make results bitwise batch-invariant)."""
    bsz = x["images"].shape[0]
    if n < bsz:
        raise PolicyInputError(f"pad_to={n} is smaller than the batch ({bsz})")
    out = {k: (v if v is None or k == "instructions" else _pad(v, n)) for k, v in x.items()}
    out["instructions"] = x["instructions"] + [x["instructions"][-1]] * (n - bsz)
    return out
