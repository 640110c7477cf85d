"""Frozen-feature cache: CLIP image/text embeddings computed once per (data, encoder, preprocessing).

Why: both CLIP towers are frozen, so their outputs for a dataset never change; one ViT-B/16 image encode
costs ~250 ms on a 2-core CPU while the trainable head is ~5M parameters. Computing them once makes a
training step cost only the head.

Cache key = sha256 of
  * the dataset content the features depend on: the demo names, every stored frame of the image key, and
    the instruction (a regenerated file with other images gets another key; touching mtime does not);
  * the encoder: the policy's encoder name and a hash of every frozen parameter (random-init weights are
    hashed too, so a different init seed is a different encoder);
  * the image preprocessing: image key, policy image size and the source of ``envs.conventions``'s
    flip/resize functions (changing the convention invalidates every cache).
The file ``<data dir or cache_dir>/<data stem>.features/<key[:16]>.npz`` holds ``image_feat (F, D) f32`` for
the file's frames (demos in numeric order), ``text_feat (Dt,) f32`` and the key; it is written atomically.
Under DDP each rank encodes a shard of the batches; rank 0 joins the shards and writes the file.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import time
from pathlib import Path

import numpy as np
import torch

from envs import conventions as C
from train.dataset import DemoFile
from train import distributed as dist_utils
from vla_flow.errors import UserError
from vla_flow.io import atomic_path

_CONTENT_HASHES: dict[tuple, str] = {}


def content_hash(df: DemoFile) -> str:
    """sha256 over demo names, lengths, every frame of the image key and the instruction (memoised per
    path + mtime within a process; the hash itself never trusts mtime)."""
    stat = df.path.stat()
    memo_key = (str(df.path.resolve()), stat.st_mtime_ns, stat.st_size, df.image_key)
    if memo_key in _CONTENT_HASHES:
        return _CONTENT_HASHES[memo_key]
    h = hashlib.sha256()
    h.update(df.instruction.encode())
    for i, name in enumerate(df.demos):
        h.update(f"{name}:{df.lengths[i]}".encode())
        h.update(np.ascontiguousarray(df.read_demo_images(i)).tobytes())
    df.close()
    _CONTENT_HASHES[memo_key] = h.hexdigest()
    return _CONTENT_HASHES[memo_key]


def encoder_fingerprint(policy: torch.nn.Module) -> str:
    """sha256 of the names, shapes and values of every frozen (requires_grad=False) parameter."""
    h = hashlib.sha256()
    for name, p in policy.named_parameters():
        if p.requires_grad:
            continue
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def preprocessing_id(image_key: str, image_size: int) -> str:
    src = "".join(inspect.getsource(f) for f in (C.flip_image, C.resize_image, C.to_policy_image))
    return f"{image_key}|size={image_size}|" + hashlib.sha256(src.encode()).hexdigest()[:16]


def cache_key(df: DemoFile, encoder_name: str, encoder_hash: str, image_size: int) -> dict:
    """The parts of the key, readable (stored in the cache file) plus ``key`` = their sha256."""
    parts = {"data": content_hash(df), "encoder": encoder_name, "encoder_weights": encoder_hash,
             "preprocessing": preprocessing_id(df.image_key, image_size)}
    parts["key"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts


def cache_path(df: DemoFile, key: str, cache_dir: str | None = None) -> Path:
    base = Path(cache_dir) if cache_dir else df.path.parent
    return base / f"{df.path.stem}.features" / f"{key[:16]}.npz"


def _frame_batches(df: DemoFile, batch_size: int) -> list[list[tuple[int, int, int]]]:
    """Batches of (row in file, demo_idx, t), in file frame order."""
    frames, row = [], 0
    for d, T in enumerate(df.lengths):
        for t in range(T):
            frames.append((row, d, t))
            row += 1
    return [frames[i:i + batch_size] for i in range(0, len(frames), batch_size)]


@torch.no_grad()
def _encode_batches(policy, df: DemoFile, batches: list, image_size: int, device, desc: str) -> dict:
    """Encode the given frame batches -> {row: (D,) f32}; images read per demo to keep I/O sequential."""
    from tqdm import tqdm

    out, cached_demo, raw = {}, None, None
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not batches):
        images = []
        for _, d, t in batch:
            if d != cached_demo:
                raw, cached_demo = df.read_demo_images(d), d
            images.append(C.to_policy_image(raw[t], image_size))
        feats = policy.encode_images(torch.from_numpy(np.stack(images)).to(device))
        feats = feats.float().cpu().numpy()
        for (row, _, _), f in zip(batch, feats):
            out[row] = f
    df.close()
    return out


def _write_cache(path: Path, image_feat: np.ndarray, text_feat: np.ndarray, key: dict) -> None:
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                # float16 halves the cache (patch tokens: 196 x 768 per frame); the policy projects in float32.
                np.savez(fh, image_feat=image_feat.astype(np.float16), text_feat=text_feat.astype(np.float32),
                         key=np.array(json.dumps(key, sort_keys=True)))
    except PermissionError as exc:
        raise UserError(f"cannot write the feature cache {path} ({exc}); set train.cache_dir=DIR to a "
                        "writable folder") from None


def load_cache(path: Path, key: dict, num_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Return (image_feat, text_feat) if ``path`` exists and holds this exact key and frame count."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if json.loads(str(z["key"])) != key or z["image_feat"].shape[0] != num_frames:
                return None
            return z["image_feat"], z["text_feat"]
    except (OSError, ValueError, KeyError):
        return None  # unreadable: rebuild


def build_or_load(policy, df: DemoFile, *, encoder_name: str, image_size: int, batch_size: int,
                  cache_dir: str | None = None, device="cpu") -> tuple[np.ndarray, np.ndarray, dict]:
    """Features for every frame of ``df``: (image_feat (F, D), text_feat (Dt,), info).

    ``info`` = {"path", "key", "built": bool, and when built "build_s" (encode + write time), "frames"}. Every DDP rank calls this; each encodes its shard.
    """
    key = cache_key(df, encoder_name, encoder_fingerprint(policy), image_size)
    path = cache_path(df, key["key"], cache_dir)
    hit = load_cache(path, key, df.num_frames)
    if hit is not None:
        return hit[0], hit[1], {"path": str(path), "key": key["key"], "built": False}
    t0 = time.perf_counter()
    rank, world = dist_utils.rank(), dist_utils.world_size()
    batches = _frame_batches(df, batch_size)[rank::world]
    rows = _encode_batches(policy, df, batches, image_size, device,
                           desc=f"feature cache {df.path.name} (rank {rank}/{world})")
    shard = path.with_name(f"{path.stem}.rank{rank}.npz")
    if world > 1:
        idx = np.array(sorted(rows), dtype=np.int64)
        with atomic_path(shard) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, rows=idx, feats=np.stack([rows[i] for i in idx.tolist()]))
        dist_utils.barrier()
    if rank == 0:
        if world > 1:
            for r in range(world):
                p = shard.with_name(f"{path.stem}.rank{r}.npz")
                with np.load(p) as z:
                    rows.update(zip(z["rows"].tolist(), z["feats"]))
                p.unlink()
        image_feat = np.stack([rows[i] for i in range(df.num_frames)])
        with torch.no_grad():
            text_feat = policy.encode_text([df.instruction]).float().cpu().numpy()[0]
        _write_cache(path, image_feat, text_feat, key)
    dist_utils.barrier()
    hit = load_cache(path, key, df.num_frames)
    if hit is None:
        raise RuntimeError(f"feature cache {path} was not readable right after writing it")
    return hit[0], hit[1], {"path": str(path), "key": key["key"], "built": True,
                            "build_s": time.perf_counter() - t0, "frames": df.num_frames}
