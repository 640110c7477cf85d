"""Policy latency, measured side by side in one run (not timed tests).

``bench_policy``: for each batch size and each Euler step count N, the median over ``repeats`` calls of
``predict``'s own timings: ``encode_ms`` (frozen image encoder + cached text lookup), ``flow_ms`` (the N-step
Euler loop + unnormalize), ``total_ms`` (the whole call, input checks included).
``bench_flow``: the flow loop alone per N, batch and thread count, N values interleaved (ratios side by side).
``bench_encoder_dtype``: the frozen image encoder in float32 vs bfloat16 (weights cast once) at several
thread counts, with the action error that bf16 features cause against fp32 features.

Encoder weights do not change speed, so the benches use random-init weights (``pretrained="none"``) unless
told otherwise; the rows say which model ran.
"""
from __future__ import annotations

import copy
import statistics
import time

import numpy as np
import torch

from policy.configuration import PolicyConfig


def _bench_config(cfg=None, pretrained: str = "none") -> PolicyConfig:
    """A PolicyConfig from an ExperimentConfig / PolicyConfig / None, with the encoder weights overridden."""
    pcfg = getattr(cfg, "policy", cfg) or PolicyConfig()
    pcfg = copy.deepcopy(pcfg)
    pcfg.vision.pretrained = pretrained
    return pcfg


def _random_inputs(pcfg: PolicyConfig, batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8),
        "instructions": ["pick up the black bowl and place it on the plate"] * batch,
        "joints": rng.normal(size=(batch, pcfg.joints_dim)).astype(np.float32),
        "ee_pose": rng.normal(size=(batch, pcfg.ee_pose_dim)).astype(np.float32),
        "gripper": rng.normal(size=(batch, pcfg.gripper_dim)).astype(np.float32) if pcfg.use_gripper_state else None,
        "wrist_images": rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
        if pcfg.vision.use_wrist_image else None,
    }


def _fake_stats(pcfg: PolicyConfig) -> dict:
    """Unit statistics: speed does not depend on them."""
    from policy.normalize import compute_stats

    rng = np.random.default_rng(0)
    return compute_stats(rng.uniform(-1, 1, (64, pcfg.action_dim)), rng.normal(size=(64, pcfg.joints_dim)),
                         rng.normal(size=(64, pcfg.ee_pose_dim)), rng.normal(size=(64, pcfg.gripper_dim)))


def build_bench_policy(cfg=None, device: str = "cpu", pretrained: str = "none"):
    from policy.modeling import FlowPolicy

    pcfg = _bench_config(cfg, pretrained)
    policy = FlowPolicy(pcfg, stats=_fake_stats(pcfg))
    return policy.to(device).eval()


def bench_policy(device: str = "cpu", batches=(1, 16), flow_steps=(1, 2, 5, 10, 50), cfg=None,
                 quick: bool = False, repeats: int = 3, policy=None) -> list[dict]:
    """Rows {device, batch, flow_steps, encode_ms, flow_ms, total_ms} (medians over ``repeats`` calls).

    quick: batch 1 only, N in {1, 10}, one repeat (a smoke run)."""
    from tqdm import tqdm

    if quick:
        batches, flow_steps, repeats = (1,), (1, 10), 1
    if device == "cuda" and not torch.cuda.is_available():
        from vla_flow.errors import UserError
        raise UserError("--device cuda: no CUDA device here; use --device cpu")
    policy = policy or build_bench_policy(cfg, device)
    rows = []
    jobs = [(b, n) for b in batches for n in flow_steps]
    with tqdm(total=len(jobs) * repeats, desc="bench policy", leave=False) as bar:
        for batch in batches:
            inputs = _random_inputs(policy.cfg, batch)
            policy.predict(**inputs, num_flow_steps=1)  # warm-up (allocations, text cache)
            for n in flow_steps:
                samples = []
                for r in range(repeats):
                    policy.predict(**inputs, num_flow_steps=n, generator=torch.Generator().manual_seed(r))
                    samples.append(dict(policy.last_timings))
                    bar.update()
                med = {k: statistics.median(s[k] for s in samples) for k in ("encode_ms", "flow_ms", "total_ms")}
                rows.append({"device": str(device), "batch": batch, "flow_steps": n, **med})
    return rows


def bench_flow(cfg=None, flow_steps=(1, 2, 5, 10), batches=(1, 2), threads=(1, 0), repeats: int = 200,
               quick: bool = False, policy=None) -> list[dict]:
    """The flow loop alone (``sample_actions`` + copy out: what ``predict`` times as ``flow_ms``) per N, batch
    and torch thread count; the N values run round-robin inside each repeat, so a load on the machine hits
    every N alike and the ratios are side by side. ``threads`` 0 = torch's default.

    Why a bench of its own: the loop is ~1-5 ms against a ~60-600 ms image encode, so ``bench_policy``'s few
    whole calls cannot resolve it, and its fixed part (hoisted conditioning product, time terms, unnormalize)
    decides how far one step is from 1/N of N steps. Rows {threads, batch, flow_steps, flow_ms_min,
    flow_ms_p50, ratio_p50} with ratio_p50 = p50 / p50 of the largest N at the same threads and batch."""
    from tqdm import tqdm

    if quick:
        batches, repeats = (1,), 20
    policy = policy or build_bench_policy(cfg)
    default, rows = torch.get_num_threads(), []
    try:
        with torch.inference_mode(), tqdm(total=len(threads) * len(batches) * repeats, desc="bench flow",
                                          leave=False) as bar:
            for nt in threads:
                torch.set_num_threads(nt or default)
                for batch in batches:
                    cond = torch.randn(batch, policy.cfg.embed_dim)  # the fused condition (B, D)
                    noise = policy.make_noise(batch, torch.Generator().manual_seed(0))
                    times: dict[int, list[float]] = {n: [] for n in flow_steps}
                    for n in flow_steps:  # warm-up
                        policy.sample_actions(cond, n, noise).float().cpu().numpy()
                    for _ in range(repeats):
                        for n in flow_steps:
                            t0 = time.perf_counter()
                            policy.sample_actions(cond, n, noise).float().cpu().numpy()
                            times[n].append((time.perf_counter() - t0) * 1e3)
                        bar.update()
                    ref = statistics.median(times[max(flow_steps)])
                    for n in flow_steps:
                        p50 = statistics.median(times[n])
                        rows.append({"threads": nt or default, "batch": batch, "flow_steps": n,
                                     "flow_ms_min": min(times[n]), "flow_ms_p50": p50, "ratio_p50": p50 / ref})
    finally:
        torch.set_num_threads(default)
    return rows


def bench_encoder_dtype(batches=(1, 16), threads=(1, 2), repeats: int = 3, cfg=None, num_flow_steps: int = 10,
                        policy=None) -> list[dict]:
    """CPU: image-encode time of float32 vs bfloat16 and the action error bf16 causes (same noise, same head).

    bf16 = the frozen image tower's weights cast once (``vision.dtype="bfloat16"``), not autocast: CPU
    autocast re-casts strided activations inside attention's bmm and measured 1.7x SLOWER than fp32 at batch
    16. Pass a trained ``policy`` (e.g. from ``load_policy``) for a meaningful action error; the default is an
    untrained head on random-init CLIP. Rows {dtype, threads, batch, encode_ms, feat_rel_err,
    action_max_abs_err, action_mean_abs_err}."""
    fp32 = policy if policy is not None else build_bench_policy(cfg)
    bf16 = copy.deepcopy(fp32)
    bf16.encoder.clip.visual.to(torch.bfloat16)
    rows, old = [], torch.get_num_threads()
    try:
        for nt in threads:
            torch.set_num_threads(nt)
            for batch in batches:
                inputs = _random_inputs(fp32.cfg, batch)
                ref = ref_feat = None
                for name, pol in (("float32", fp32), ("bfloat16", bf16)):
                    pol.predict(**inputs, num_flow_steps=1)  # warm-up
                    times = []
                    for _ in range(repeats):
                        pol.predict(**inputs, num_flow_steps=num_flow_steps, generator=torch.Generator().manual_seed(0))
                        times.append(pol.last_timings["encode_ms"])
                    out = pol.predict(**inputs, num_flow_steps=num_flow_steps, generator=torch.Generator().manual_seed(0))
                    feat = pol.encode_images(inputs["images"])
                    ref, ref_feat = (out, feat) if ref is None else (ref, ref_feat)
                    err = np.abs(out - ref)
                    feat_err = float((feat - ref_feat).norm() / ref_feat.norm())
                    rows.append({"dtype": name, "threads": nt, "batch": batch, "encode_ms": statistics.median(times),
                                 "feat_rel_err": feat_err, "action_max_abs_err": float(err.max()),
                                 "action_mean_abs_err": float(err.mean())})
    finally:
        torch.set_num_threads(old)
    return rows
