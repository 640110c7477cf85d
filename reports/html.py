"""The report page: one self-contained HTML file for reading results and reviewing episode videos.

Why it is built this way:
- A jinja2 template with autoescape on: every string that comes from files (task names, errors, run
  metadata) is escaped. Episode data reaches the page's JavaScript as JSON inside a
  ``<script type="application/json">`` block (``|tojson`` escapes ``<``, ``>``, ``&``), and the script
  writes it with ``textContent``, never ``innerHTML``.
- CSS, JS and the plot (base64 PNG) are inline; videos are linked by paths relative to the page, so the
  output folder (with the evaluation folders beside it) can be copied or served as is.
- Big runs (7,500 episodes) stay responsive: cards are created client-side one page at a time, videos use
  ``preload="none"`` and get their ``src`` only when scrolled into view (IntersectionObserver).
"""
from __future__ import annotations

import base64
import datetime as dt
import math
import os
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from reports.summary import ALL_TASKS, Comparison

TEMPLATES = Path(__file__).parent / "templates"
EPISODE_FIELDS = ["run", "task", "init_state", "flow_steps", "seed", "outcome", "status", "steps",
                  "policy_ms_p50", "video", "poster", "error"]


def video_hrefs(videos: pd.Series, run_dir: Path, out_dir: Path) -> pd.Series:
    """Episode video paths (relative to ``run_dir``) -> URL paths relative to the page in ``out_dir``.

    Empty or missing files become ``''`` so the card says "no video" instead of a broken player.
    """
    base = os.path.relpath(Path(run_dir).resolve(), Path(out_dir).resolve())

    def one(v: str) -> str:
        if not v or not (run_dir / v).is_file():
            return ""
        return quote(Path(os.path.normpath(os.path.join(base, v))).as_posix())

    return videos.map(one)


def poster_hrefs(videos: pd.Series, run_dir: Path, out_dir: Path) -> pd.Series:
    """Poster frames (the video's last frame) as URL paths relative to the page, ``''`` where none.

    ``vla-flow eval`` writes ``videos/<name>.jpg`` beside each video; for videos from older runs that have
    none, the last frame is decoded once into ``out_dir/posters/`` (the evaluation folder is not touched).
    """
    from eval.video import poster_path, write_poster

    def one(v: str) -> str:
        if not v or not (run_dir / v).is_file():
            return ""
        poster = run_dir / poster_path(v)
        if not poster.is_file():
            poster = out_dir / "posters" / Path(v).with_suffix(".jpg").name
            if not poster.is_file():
                try:
                    write_poster(poster, _last_frame(run_dir / v))
                except Exception:  # noqa: BLE001 - an undecodable video just gets no poster
                    return ""
        rel = os.path.relpath(poster.resolve(), Path(out_dir).resolve())
        return quote(Path(rel).as_posix())

    return videos.map(one)


def _last_frame(path: Path):
    import imageio.v3 as iio

    frame = None
    for frame in iio.imiter(path, plugin="pyav") if _has_pyav() else iio.imiter(path):
        pass
    if frame is None:
        raise ValueError(f"{path}: no frames")
    return frame


def _has_pyav() -> bool:
    import importlib.util

    return importlib.util.find_spec("av") is not None


def flatten(meta: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested run.json -> sorted ``(dotted.key, value text)`` rows for a key/value table."""
    rows = []
    for k, v in meta.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            rows += flatten(v, key + ".")
        elif isinstance(v, (list, tuple)):
            rows.append((key, " ".join(map(str, v))))
        else:
            rows.append((key, str(v)))
    return rows


def random_init(meta: dict) -> bool:
    """True when any ``random_init`` key anywhere in run.json is true (CLIP was not pretrained)."""
    return any(k.rsplit(".", 1)[-1] == "random_init" and v.lower() in ("true", "1", "yes")
               for k, v in flatten(meta))


def _episodes_json(df: pd.DataFrame) -> dict:
    """Compact column-wise JSON for the gallery: string columns as indices into lookup lists."""
    outcome = df["success"].map({True: "success", False: "failure"}).where(df["status"] == "ok", "error")
    data = pd.DataFrame({
        "run": df["run"] if "run" in df.columns else "",
        "task": df["task"].astype(str), "init_state": df["init_state"].astype(int),
        "flow_steps": df["flow_steps"].astype(int), "seed": df["seed"].astype(int), "outcome": outcome,
        "status": df["status"], "steps": df["steps"].fillna(-1).astype(int),
        "policy_ms_p50": df["policy_ms_p50"].astype(float).round(1), "video": df["video_href"],
        "poster": df["poster_href"] if "poster_href" in df.columns else "",
        "error": df["error"].str.slice(0, 500),
    }).sort_values(["run", "task", "init_state", "seed", "flow_steps"])
    data["policy_ms_p50"] = data["policy_ms_p50"].map(lambda x: None if math.isnan(x) else x)
    return {"fields": EPISODE_FIELDS, "rows": data[EPISODE_FIELDS].values.tolist()}


def _words(task: str) -> str:
    """LIBERO task names use underscores; show them as words so they wrap in narrow cells."""
    return str(task).replace("_", " ")


def _fmt_pct(x) -> str:
    return "–" if x is None or pd.isna(x) else f"{100 * x:.1f}%"


def _fmt_num(x, digits: int = 1) -> str:
    return "–" if x is None or pd.isna(x) else f"{x:.{digits}f}"


def _fmt_p(p) -> str:
    return "–" if p is None or pd.isna(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def render_report(episodes: pd.DataFrame, table: pd.DataFrame, metas: dict[str, dict],
                  comparisons: list[Comparison], plot_png: Path | None, dirs: dict[str, str]) -> str:
    """The page as a string. ``episodes`` needs a ``video_href`` column (see :func:`video_hrefs`)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_fmt_pct, num=_fmt_num, pval=_fmt_p, words=_words)
    runs = [{"name": name, "dir": dirs[name], "meta": flatten(meta), "missing": not meta,
             "random_init": random_init(meta), "home_arm": bool(meta.get("home_arm"))}
            for name, meta in metas.items()]
    plot = base64.b64encode(plot_png.read_bytes()).decode() if plot_png else None
    from reports.suite import published_for, suite_grid

    suites = sorted({str(m.get("suite")) for m in metas.values() if m.get("suite")})
    published = [p.__dict__ for s in suites for p in published_for(s)]
    grid = suite_grid(episodes[episodes["run"] == next(iter(metas))] if "run" in episodes.columns else episodes)
    return env.get_template("report.html.j2").render(
        grid=grid, published=published, suites=suites, multi_run=len(metas) > 1,
        runs=runs, table=table.to_dict("records"), has_run="run" in table.columns, all_tasks=ALL_TASKS,
        comparisons=[{"title": c.title, "refused": c.refused,
                      "rows": None if c.table is None else c.table.to_dict("records")}
                     for c in comparisons],
        plot=plot, data=_episodes_json(episodes), n_episodes=len(episodes),
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"))
