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


def wrap_render(sim, env) -> None:
    """The one render wrapper of a robosuite ``MjSim`` (installed once per sim; a hard reset builds a new
    one): it makes the sim's own GL context current (robosuite renders into whatever context is current:
    with several envs in one process that is another env's, giving wrong or empty frames), honours
    ``env.cameras_on`` (True, False or a set of camera names; cameras off give blank frames) and adds the
    render time to ``env._render_s`` (``info["render_ms"]``)."""
    import time

    import numpy as np

    if getattr(sim.render, "_vla_timed", False):
        return
    original = sim.render

    def render(*args, **kwargs):
        on = env.cameras_on
        if not (on is True or (on and kwargs.get("camera_name") in on)):
            h, w = kwargs.get("height", 1), kwargs.get("width", 1)
            blank = np.zeros((h, w, 3), dtype=np.uint8)
            return (blank, np.zeros((h, w), dtype=np.float32)) if kwargs.get("depth") else blank
        t0 = time.perf_counter()
        try:
            sim._render_context_offscreen.gl_ctx.make_current()
            return original(*args, **kwargs)
        finally:
            env._render_s += time.perf_counter() - t0

    render._vla_timed = True
    sim.render = render
