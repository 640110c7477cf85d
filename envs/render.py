"""Render settings for the offscreen cameras, and the record of them that goes into every output.

The fast mode is for CPU machines (EGL on Mesa llvmpipe), where rendering dominates the step time:
it turns off multisample anti-aliasing (``model.vis.quality.offsamples = 0``), shadows and
reflections. Images change slightly (edges lose anti-aliasing, no shadows), so train and eval must
use the same setting: ``render_metadata`` is written next to every dataset and result.

``offsamples`` is read when MuJoCo creates the render context (``mjr_makeContext`` sizes the
multisample buffer), so changing it afterwards needs a new ``MjrContext``; shadows and reflections
are scene flags. robosuite's hard reset rebuilds the model, the sim and the context, so the env
re-applies these settings after every reset.
"""
from __future__ import annotations

import os

from envs.config import RenderConfig


def render_metadata(cfg: RenderConfig) -> dict:
    """JSON-able record of how frames were rendered (stored in HDF5 attrs and run.json)."""
    return {
        "fast": bool(cfg.fast),
        "camera_size": int(cfg.camera_size),
        "cameras": list(cfg.cameras),
        "msaa": not cfg.fast,  # model.vis.quality.offsamples: model default (4) or 0
        "shadows": not cfg.fast,
        "reflections": not cfg.fast,
        "mujoco_gl": os.environ.get("MUJOCO_GL", ""),
    }


def apply_render_settings(sim, cfg: RenderConfig) -> None:
    """Apply ``cfg`` to a robosuite ``MjSim``'s offscreen context (no-op without one or when not fast)."""
    import mujoco

    ctx = getattr(sim, "_render_context_offscreen", None)
    if ctx is None or not cfg.fast:
        return
    sim.model.vis.quality.offsamples = 0
    if ctx.con.offSamples != 0:  # rebuild the context so the multisample buffer goes away
        ctx.gl_ctx.make_current()
        ctx.con.free()
        ctx._set_mujoco_context_and_buffers()
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


def current_render_state(sim) -> dict:
    """What the live context actually does (for tests): offsamples, shadow and reflection flags."""
    import mujoco

    ctx = getattr(sim, "_render_context_offscreen", None)
    if ctx is None:
        return {}
    return {
        "offsamples": int(ctx.con.offSamples),
        "shadows": bool(ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW]),
        "reflections": bool(ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION]),
    }
