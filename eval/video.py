"""Episode videos: MP4 (H.264 via imageio-ffmpeg) at LIBERO's 20 Hz control rate, written off the hot path.

Frames arrive right side up (``envs.libero.policy_inputs`` flips LIBERO's upside-down renders); this
module never flips. The overlay goes in a black band *below* the image, so the camera image itself is
untouched (the orientation test decodes the top rows). A single writer thread encodes while rollouts go
on; ``close()`` waits for it and re-raises the first encoding error.
"""
from __future__ import annotations

import os
import queue
import re
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

FPS = 20  # envs.conventions.CONTROL_HZ; a video plays at the true control rate
BAND = 32  # overlay band height (keeps the frame height a multiple of 16 for H.264 at 224 px)


def video_name(task_index: int, task: str, init_state: int, flow_steps: int, seed: int, outcome: str) -> str:
    """``t03_pick_up_the_black_bowl..__init07__N5__seed0__failure.mp4`` (task name cut to 60 chars)."""
    slug = re.sub(r"[^a-z0-9]+", "_", task.lower()).strip("_")[:60]
    return f"t{task_index:02d}_{slug}__init{init_state:02d}__N{flow_steps}__seed{seed}__{outcome}.mp4"


def overlay(frames: Sequence[np.ndarray], lines: Sequence[str], success_step: int | None) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, H + BAND, W, 3): two text lines per frame below the image.

    ``lines[0]`` is the task; line two is built per frame: the fixed ``lines[1]`` + step + success so far.
    """
    from PIL import Image, ImageDraw

    frames = np.asarray(frames)
    t, h, w, _ = frames.shape
    out = np.zeros((t, h + BAND, w, 3), dtype=np.uint8)
    out[:, :h] = frames
    for k in range(t):
        band = Image.new("RGB", (w, BAND))
        draw = ImageDraw.Draw(band)
        done = success_step is not None and k >= success_step
        draw.text((2, 1), lines[0][: w // 6], fill=(255, 255, 255))
        draw.text((2, 16), f"{lines[1]} step {k}" + ("  SUCCESS" if done else ""),
                  fill=(80, 255, 80) if done else (255, 255, 255))
        out[k, h:] = np.asarray(band)
    return out


def poster_path(video: str | Path) -> Path:
    """The poster (last frame, JPEG) beside a video: ``videos/x.mp4`` -> ``videos/x.jpg``. The report shows it
    on the card, so outcomes can be scanned without playing each video."""
    return Path(video).with_suffix(".jpg")


def write_poster(path: str | Path, frame: np.ndarray) -> None:
    """One (H, W, 3) uint8 frame to JPEG, atomically."""
    from PIL import Image

    from vla_flow.io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(frame)).save(tmp, format="JPEG", quality=85)


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Encode (T, H, W, 3) uint8 to H.264 MP4 atomically (temp file beside ``path``, then rename)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.part.mp4")
    try:
        writer = imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=7,
                                    pixelformat="yuv420p", macro_block_size=16, ffmpeg_log_level="error")
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
        _check_complete(tmp, path)  # imageio ignores ffmpeg's exit code (e.g. on a full disk)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _check_complete(tmp: Path, path: Path) -> None:
    """Raise unless ``tmp`` is a whole MP4: top-level boxes that tile the file, ``moov`` among them (ffmpeg
    writes it last, so a write cut off by a full disk lacks it)."""
    import errno
    import shutil
    import struct

    size, pos, boxes = tmp.stat().st_size, 0, set()
    with open(tmp, "rb") as fh:
        while pos + 8 <= size:
            fh.seek(pos)
            n, kind = struct.unpack(">I4s", fh.read(8))
            n = struct.unpack(">Q", fh.read(8))[0] if n == 1 else (size - pos if n == 0 else n)
            if n < 8:
                break
            boxes.add(kind)
            pos += n
    if pos == size and b"moov" in boxes:
        return
    if shutil.disk_usage(tmp.parent).free < (1 << 20):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    raise RuntimeError(f"ffmpeg left an incomplete video for {path} ({size} bytes); see its messages above")


class VideoWriter:
    """Background thread that overlays and encodes episodes; ``submit`` returns at once.

    The queue is bounded (``max_pending`` episodes) so a slow encoder cannot hold unbounded frames.
    """

    def __init__(self, out_dir: str | Path, max_pending: int = 8):
        self.dir = Path(out_dir)
        self._q: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="video-writer", daemon=True)
        self._thread.start()

    def submit(self, name: str, frames: list[np.ndarray], lines: Sequence[str], success_step: int | None) -> str:
        """Queue one episode; returns the relative path (``videos/<name>``) the file will have."""
        if self._error is not None:
            raise RuntimeError(f"video writer failed: {self._error}") from self._error
        self._q.put((name, frames, list(lines), success_step))
        return f"videos/{name}"

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            name, frames, lines, success_step = item
            try:
                framed = overlay(frames, lines, success_step)
                write_mp4(self.dir / "videos" / name, framed)
                write_poster(poster_path(self.dir / "videos" / name), framed[-1])
            except BaseException as exc:  # noqa: BLE001 - reported by close()/submit()
                self._error = self._error or exc

    def close(self) -> None:
        """Finish every queued video, then stop the thread; raises if any encode failed."""
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"video writer failed: {self._error}") from self._error
