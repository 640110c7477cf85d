"""Loss curve PNG from a run's ``metrics.csv`` (training loss per epoch, validation loss where measured).

    python -m train.plot RUN/metrics.csv RUN/loss.png [--targets 100:0.1 500:0.02]

Log-scale loss against epoch; optional target points (epoch:loss) are drawn as markers so the README's
convergence claim can be checked by eye.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from train.logs import read_metrics
from vla_flow.io import atomic_path


def plot_loss(csv_path: str | Path, png_path: str | Path, targets: list[tuple[float, float]] | None = None,
              title: str | None = None) -> Path:
    """Write the PNG atomically; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(csv_path)
    if not rows:
        raise ValueError(f"{csv_path}: no metric rows to plot")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], lw=1.2, label="train loss (flow MSE)")
    val = [r for r in rows if r.get("val_loss") is not None]
    if val:
        ax.plot([r["epoch"] for r in val], [r["val_loss"] for r in val], "o-", ms=3, label="val loss")
    for epoch, loss in targets or []:
        ax.plot([epoch], [loss], "r*", ms=10)
        ax.annotate(f"target {loss:g} @ epoch {epoch:g}", (epoch, loss), textcoords="offset points",
                    xytext=(5, 5), fontsize=8, color="r")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title or str(Path(csv_path).parent.name))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return png_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv")
    p.add_argument("png")
    p.add_argument("--targets", nargs="*", default=[], help="epoch:loss points, e.g. 100:0.1 500:0.02")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    targets = [tuple(float(x) for x in t.split(":")) for t in args.targets]
    print(plot_loss(args.csv, args.png, targets, args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
