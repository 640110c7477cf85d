"""Which OpenGL backend the offscreen cameras use, and the fix-it message when it cannot start.

robosuite and MuJoCo pick their GL backend from ``MUJOCO_GL`` when they are first imported, and
PyOpenGL from ``PYOPENGL_PLATFORM``; so every entry point that may render calls
``ensure_gl_backend()`` before anything imports robosuite. The default is headless EGL, which on a
CPU-only machine is Mesa's llvmpipe; a value the user set is always kept.
"""
from __future__ import annotations

import os
import traceback
from typing import Optional


def ensure_gl_backend() -> None:
    """Default ``MUJOCO_GL`` to ``egl`` (and PyOpenGL's platform to match) unless the user chose one."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def gl_hint(exc: BaseException) -> Optional[str]:
    """A one-line fix-it message if ``exc`` came from OpenGL/EGL/OSMesa context creation, else None."""
    frames = " ".join(f.filename for f in traceback.extract_tb(exc.__traceback__))
    text = f"{type(exc).__name__}: {exc}".lower()
    gl_frames = any(k in frames for k in ("OpenGL", "renderers/context", "gl_context", "glfw"))
    if gl_frames or any(k in text for k in ("egl", "opengl", "osmesa", "glfw", "glgeterror", "mujoco_gl")):
        gl = os.environ.get("MUJOCO_GL", "")
        return (f"could not create an offscreen OpenGL context (MUJOCO_GL={gl!r}): {type(exc).__name__}: {exc}. "
                "Set MUJOCO_GL=egl (needs libEGL, e.g. apt install libegl1) or MUJOCO_GL=osmesa (software, "
                "needs libosmesa6), or run without cameras (env.render.cameras=[])")
    return None
