"""Loss-curve PNG from a metrics.csv."""
from __future__ import annotations

from train.logs import COLUMNS
from train.plot import plot_loss


def test_plot_writes_png(tmp_path):
    csv = tmp_path / "metrics.csv"
    rows = [",".join(COLUMNS)] + [f"{s},{s / 10},{1 / s},{'' if s % 5 else 2 / s},,,0.001,1.0,100,{s}"
                                  for s in range(1, 21)]
    csv.write_text("\n".join(rows) + "\n")
    png = plot_loss(csv, tmp_path / "loss.png", targets=[(1.0, 0.1)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
