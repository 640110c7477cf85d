"""Frozen CLIP image and text towers (open_clip), weight loading, and the offline failure path.

``vision.pretrained``:
- "openai": open_clip's ``ViT-B-16-quickgelu`` openai weights. open_clip downloads them from the Hugging Face
  Hub (``timm/vit_base_patch16_clip_224.openai``). We look in the HF cache first; if the file is not there we
  probe the network for at most ~3 s and, offline, raise a UserError that says where to put the file, instead
  of open_clip's own ~45 s of retries. Never a silent fallback to random weights.
- a path to a local weights file (open_clip state dict, ``.safetensors`` / ``.bin`` / ``.pt``).
- "none": random init from ``vision.init_seed`` (so a checkpoint can rebuild the same encoder without storing
  150M frozen parameters; a fingerprint of the weights is kept to detect drift). A loud warning is printed,
  and ``provenance["random_init"] = True`` goes into the checkpoint and every report header.

The towers are frozen: no parameter requires grad, and the module stays in eval mode even when the policy's
``train()`` is called (no dropout / norm updates in a "frozen" encoder).
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from policy.configuration import TINY_MODEL, TINY_MODEL_CFG, VisionConfig
from vla_flow.errors import UserError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224
HF_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
NETWORK_PROBE_S = 3.0


class EncoderWeightsError(UserError):
    """CLIP weights requested but not available (offline, missing file)."""


def _hf_repo(model: str) -> str:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, "openai") or {}
    return cfg.get("hf_hub", "").rstrip("/")


def _cached_openai_file(model: str) -> str | None:
    """Path of the openai weights in the Hugging Face cache, or None."""
    repo = _hf_repo(model)
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    for name in HF_FILENAMES:
        path = try_to_load_from_cache(repo, name)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def _network_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = NETWORK_PROBE_S) -> bool:
    """True if a TCP connection to ``host`` opens within ``timeout`` (DNS included, bounded by a thread)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "0") not in ("", "0"):
        return False
    result = {"ok": False}

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return result["ok"]


def _offline_message(model: str) -> str:
    repo = _hf_repo(model) or "<see open_clip.get_pretrained_cfg>"
    return (f"CLIP weights for {model} (pretrained='openai') are not cached and the network is unreachable. "
            f"On a machine with internet run: huggingface-cli download {repo} open_clip_model.safetensors "
            "(or python -c \"import open_clip; open_clip.create_model('" + model + "', pretrained='openai')\") "
            "and copy ~/.cache/huggingface/hub to this machine (or set HF_HOME to where it lies); or set "
            "policy.vision.pretrained=/path/to/open_clip_model.safetensors; or use policy.vision.pretrained=none "
            "for random-init encoders (results are then NOT those of pretrained CLIP).")


def _build_random(vcfg: VisionConfig) -> nn.Module:
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(vcfg.init_seed)
        if vcfg.model == TINY_MODEL:
            return open_clip.model.CLIP(**TINY_MODEL_CFG)
        if open_clip.get_model_config(vcfg.model) is None:
            raise UserError(f"vision.model: unknown open_clip model '{vcfg.model}'")
        import logging

        logging.getLogger().disabled, was = True, logging.getLogger().disabled
        try:
            return open_clip.create_model(vcfg.model, pretrained=None)
        finally:
            logging.getLogger().disabled = was


def _warn_random_init(vcfg: VisionConfig) -> None:
    msg = (f"\n{'!' * 78}\n!! RANDOM-INIT CLIP ENCODERS (vision.pretrained='none', model={vcfg.model}, "
           f"seed={vcfg.init_seed}).\n!! Image/text features are random projections, NOT pretrained CLIP. "
           f"This is recorded in the checkpoint\n!! (random_init=True) and must be stated in every report.\n"
           f"{'!' * 78}")
    warnings.warn("random-init CLIP encoders (vision.pretrained='none')", stacklevel=3)
    print(msg, file=sys.stderr)


def fingerprint(module: nn.Module) -> list[float]:
    """[sum, sum of squares] of all parameters in float64: detects a different random init or weights file."""
    s = sq = 0.0
    for p in module.parameters():
        d = p.detach().double()
        s += float(d.sum())
        sq += float((d * d).sum())
    return [s, sq]


def load_clip(vcfg: VisionConfig) -> tuple[nn.Module, dict]:
    """Build the open_clip model and its provenance dict (pretrained, random_init, model, seed, path)."""
    import open_clip

    prov = {"model": vcfg.model, "pretrained": vcfg.pretrained, "random_init": False, "init_seed": None,
            "weights_file": None}
    if vcfg.pretrained.lower() == "none":
        _warn_random_init(vcfg)
        model = _build_random(vcfg)
        prov.update(random_init=True, init_seed=vcfg.init_seed)
    elif vcfg.pretrained.lower() == "openai":
        if vcfg.model == TINY_MODEL:
            raise UserError("vision.model=tiny has no pretrained weights; use vision.pretrained=none")
        path = _cached_openai_file(vcfg.model)
        if path is None and not _network_reachable():
            raise EncoderWeightsError(_offline_message(vcfg.model))
        model = open_clip.create_model(vcfg.model, pretrained=path or "openai")
        prov["weights_file"] = path
    else:
        path = Path(vcfg.pretrained).expanduser()
        if not path.is_file():
            raise EncoderWeightsError(f"vision.pretrained: weights file not found: {path}. Expected 'openai', "
                                      "'none' or the path of an open_clip weights file")
        model = _build_random(vcfg)  # architecture only; every weight is overwritten (strict load)
        try:
            open_clip.load_checkpoint(model, str(path), strict=True)
        except Exception as exc:
            raise EncoderWeightsError(f"vision.pretrained: cannot load {path} into {vcfg.model}: {exc}") from exc
        prov["weights_file"] = str(path)
    prov["fingerprint"] = fingerprint(model)
    return model, prov


def cpu_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (AMX or AVX512-BF16); emulated bf16 is slower than fp32."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def native_bf16() -> str:
    """Where bfloat16 matmuls run natively: ``"cuda"``, ``"cpu (AMX)"``, ``"cpu (AVX512-BF16)"``, or ``""``."""
    if torch.cuda.is_available():
        return "cuda"
    if torch.cpu._is_amx_tile_supported():
        return "cpu (AMX)"
    if torch.cpu._is_avx512_bf16_supported():
        return "cpu (AVX512-BF16)"
    return ""


_WARNED: set = set()


def resolve_dtype(dtype: str) -> str:
    """``vision.dtype`` -> the dtype the image tower runs in on this machine ("float32" or "bfloat16").

    Why: the bf16 tower is the fast path only where bf16 is native. Measured on a 2-core AMD EPYC with AVX2
    only (torch 2.14.1, ViT-B/16, batch 16): float32 783 ms/frame, bfloat16 4,533 ms/frame (5.8x slower);
    on the AVX512-BF16/AMX Xeon it is ~2.8x faster than float32. "auto" takes bf16 where it is native;
    an explicit "bfloat16" is honoured (features match what a checkpoint was trained on) with a note where it
    is emulated. The two give features within ~1-5% of each other (tests/policy/test_encoders.py).
    """
    if dtype == "auto":
        return "bfloat16" if native_bf16() else "float32"
    if dtype == "bfloat16" and not native_bf16() and "bf16" not in _WARNED:
        _WARNED.add("bf16")
        print("note: vision.dtype=bfloat16 on a CPU without native bf16 (no AVX512-BF16/AMX): the image tower "
              "runs emulated, several times slower than float32; policy.vision.dtype=auto picks float32 here",
              file=sys.stderr)
    return dtype


class FrozenClip(nn.Module):
    """Frozen CLIP towers. Image: (B, 224, 224, 3) uint8 / float in [0, 1] -> pooled (B, 512) or patch tokens
    (B, 196, width). Text: list of B strings -> (B, 512), each distinct string encoded once and cached."""

    def __init__(self, vcfg: VisionConfig):
        super().__init__()
        import open_clip

        from vla_flow.worklog import mark

        mark("model")
        self.vcfg = vcfg
        self.clip, self.provenance = load_clip(vcfg)
        tok_name = "ViT-B-16-quickgelu" if vcfg.model == TINY_MODEL else vcfg.model
        self.tokenizer = open_clip.get_tokenizer(tok_name)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.token_width = self.clip.visual.transformer.width
        self.embed_dim = self.clip.visual.output_dim
        self.clip.visual.output_tokens = True
        for p in self.parameters():
            p.requires_grad_(False)
        self.compute_dtype = resolve_dtype(vcfg.dtype)
        if self.compute_dtype == "bfloat16":
            self.clip.visual.to(torch.bfloat16)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.text_encode_calls = 0  # number of strings actually run through the text tower (tests, benches)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenClip":
        """Frozen: always eval mode, whatever the caller asks."""
        return super().train(False)

    def _apply(self, fn, *args, **kwargs):
        self._text_cache.clear()  # cached tensors live on the old device/dtype
        return super()._apply(fn, *args, **kwargs)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 224, 224, 3) uint8 or float in [0, 1] (channels last) -> (B, 3, 224, 224) CLIP-normalized."""
        x = images.to(self.mean.device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = x.permute(0, 3, 1, 2)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, feature: str = "pooled", patch_grid: int = 14) -> torch.Tensor:
        """Frozen image features: "pooled" -> (B, 512) L2-normalized; "patch_tokens" -> (B, G*G, width), the
        14x14 token grid average-pooled to ``patch_grid`` G (14: all 196 tokens)."""
        x = self.preprocess(images)
        visual = self.clip.visual
        x = x.to(next(visual.parameters()).dtype)
        pooled, tokens = visual(x)
        if feature == "pooled":
            return nn.functional.normalize(pooled.float(), dim=-1)
        if feature == "patch_tokens":
            return _pool_grid(tokens.float(), patch_grid)
        raise ValueError(f"image_feature: {feature!r}; expected 'pooled' or 'patch_tokens'")

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """(B,) strings -> (B, 512) L2-normalized; only strings not seen before run the text tower."""
        new = sorted({t for t in texts if t not in self._text_cache})
        if new:
            # Cache ordinary tensors even when called under inference_mode, so training can use them later.
            with torch.inference_mode(False):
                tokens = self.tokenizer(new).to(self.mean.device)  # truncates to 77 tokens
                feats = nn.functional.normalize(self.clip.encode_text(tokens).float(), dim=-1)
            self.text_encode_calls += len(new)
            for text, feat in zip(new, feats):
                self._text_cache[text] = feat
        return torch.stack([self._text_cache[t] for t in texts])


def _pool_grid(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, S*S, W) row-major patch tokens -> (B, grid*grid, W) by average pooling the S x S grid."""
    b, n, w = tokens.shape
    side = int(round(n ** 0.5))
    if grid == side:
        return tokens
    if side * side != n or side % grid:
        raise ValueError(f"patch_grid {grid} does not divide the {side}x{side} token grid")
    x = tokens.transpose(1, 2).reshape(b, w, side, side)
    return nn.functional.avg_pool2d(x, side // grid).flatten(2).transpose(1, 2).contiguous()
