"""Training metrics: the same rows to TensorBoard (``RUN/tb``) and to ``RUN/metrics.csv`` (readable, plottable).

Columns: step, epoch, loss (mean of the step losses since the previous row, all-reduced over ranks),
val_loss, val_mse_n1, val_mse_n10 (blank on rows without validation), lr, grad_norm (mean, before clipping),
samples_per_s (global samples per second of training, validation time excluded), wall_s.
The running window is part of the checkpoint, so a resumed run writes the rows an uninterrupted run writes.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

from vla_flow.io import atomic_write_text

COLUMNS = ["step", "epoch", "loss", "val_loss", "val_mse_n1", "val_mse_n10", "lr", "grad_norm",
           "samples_per_s", "wall_s"]


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics.csv as dicts of floats (blank cells -> None)."""
    with open(path, newline="") as fh:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(fh)]


class MetricsLogger:
    """Rank 0 writes; other ranks keep the window (cheap) and write nothing."""

    def __init__(self, out: Path, enabled: bool, resume_step: int = 0, window: dict | None = None):
        self.enabled = enabled
        self.path = Path(out) / "metrics.csv"
        self.window = dict(window or {"loss_sum": 0.0, "grad_sum": 0.0, "n": 0, "samples": 0})
        self.t_last = time.perf_counter()
        self.t0 = self.t_last
        self.tb = None
        if not enabled:
            return
        Path(out).mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step] \
            if resume_step and self.path.is_file() else []
        lines = [",".join(COLUMNS)] + [",".join(_fmt(r.get(c)) for c in COLUMNS) for r in kept]
        atomic_write_text(self.path, "\n".join(lines) + "\n")  # drop rows written after the checkpoint
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(Path(out) / "tb"), purge_step=resume_step + 1 if resume_step else None)

    def accumulate(self, loss: float, grad_norm: float, samples: int) -> None:
        w = self.window
        w["loss_sum"] += loss
        w["grad_sum"] += grad_norm
        w["n"] += 1
        w["samples"] += samples

    def window_state(self) -> dict:
        return dict(self.window)

    def row(self, step: int, epoch: float, lr: float, val: dict, exclude_s: float = 0.0) -> dict:
        now = time.perf_counter()
        w = self.window
        n = max(1, w["n"])
        row = {"step": step, "epoch": epoch, "loss": w["loss_sum"] / n, "lr": lr, "grad_norm": w["grad_sum"] / n,
               "samples_per_s": w["samples"] / max(1e-9, now - self.t_last - exclude_s), "wall_s": now - self.t0}
        row.update(val)
        self.window = {"loss_sum": 0.0, "grad_sum": 0.0, "n": 0, "samples": 0}
        self.t_last = now
        if self.enabled:
            with open(self.path, "a") as fh:
                fh.write(",".join(_fmt(row.get(c)) for c in COLUMNS) + "\n")
            for key, value in row.items():
                if key not in ("step", "wall_s"):
                    self.tb.add_scalar(f"train/{key}" if not key.startswith("val") else f"val/{key}", value, step)
            self.tb.flush()
        return row

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(value) -> str:
    """Blank for None, exact repr for floats (so resumed/DDP curves can be compared to full precision)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value)) if isinstance(value, float) else str(value)
