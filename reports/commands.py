"""``vla-flow report DIR [DIR ...] [--out OUT]``: tables, plot and HTML page for evaluation directories.

Imports nothing heavy at module level (pandas, matplotlib, jinja2 load inside the command).
"""
from __future__ import annotations

import argparse
from pathlib import Path

OUTPUTS = ("summary.csv", "summary.parquet", "speed_quality.png", "report.html")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="summary tables, speed/quality plot and an HTML page for evaluation results",
        description="Read DIR/episodes.parquet and DIR/run.json of one or more evaluation directories "
                    "and write summary.csv, summary.parquet, speed_quality.png and report.html to OUT. "
                    "Several DIRs are compared as runs (e.g. two checkpoints on the same episode keys).")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="evaluation directory written by `vla-flow eval`")
    p.add_argument("--out", metavar="OUT", default=None,
                   help="output folder (default: DIR when one DIR is given; required for several)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from vla_flow.errors import UserError

    if args.out is None and len(args.dirs) > 1:
        raise UserError("several DIRs given: pass --out OUT for the combined report")
    out = Path(args.out if args.out is not None else args.dirs[0])
    from vla_flow.io import check_output_dir, disk_errors

    if args.out is not None or Path(args.dirs[0]).is_dir():  # a missing DIR is reported by make_report
        check_output_dir(out, "--out" if args.out is not None else "DIR")
    from reports import robustness

    if len(args.dirs) == 1 and robustness.is_robustness_dir(args.dirs[0]):  # a `vla-flow eval --suites` folder
        with disk_errors(out):
            table = robustness.make_robustness_report(args.dirs[0], out)
        print(robustness.format_table(table))
        print("\nwrote " + ", ".join(str(out / name) for name in robustness.OUTPUTS))
        return 0
    with disk_errors(out):
        table = make_report([Path(d) for d in args.dirs], out)
    print(format_table(table))
    print("\nwrote " + ", ".join(str(out / name) for name in OUTPUTS))
    return 0


def make_report(dirs: list[Path], out: Path):
    """Write the four report files into ``out``; return the summary table (pandas DataFrame)."""
    from reports import html, plots
    from reports.summary import load, load_run_meta, report_summary, run_names, standard_comparisons
    from vla_flow.errors import UserError
    from vla_flow.io import atomic_path, atomic_write_text

    names = run_names(dirs)
    df = load(dirs)
    if df.empty:
        raise UserError(f"no episodes yet in {', '.join(str(d / 'episodes.parquet') for d in dirs)}: "
                        f"let `vla-flow eval` finish some episodes, then rerun the report")
    out.mkdir(parents=True, exist_ok=True)
    run_of = df["run"] if "run" in df.columns else None
    df["video_href"], df["poster_href"] = "", ""
    for name, d in zip(names, dirs):
        rows = slice(None) if run_of is None else (run_of == name)
        df.loc[rows, "video_href"] = html.video_hrefs(df.loc[rows, "video"], d, out)
        df.loc[rows, "poster_href"] = html.poster_hrefs(df.loc[rows, "video"], d, out)
    table = report_summary(df)
    with atomic_path(out / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "summary.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    png = plots.speed_quality_plot(table, out / "speed_quality.png")
    metas = {name: load_run_meta(d) for name, d in zip(names, dirs)}
    page = html.render_report(df, table, metas, standard_comparisons(df), png,
                              {name: str(d) for name, d in zip(names, dirs)})
    atomic_write_text(out / "report.html", page)
    _readable(out)
    return table


def _readable(out: Path) -> None:
    """Atomic writes come from mkstemp (mode 0600); give the report files the usual umask mode so a
    copied or served report folder is readable by others."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    for name in OUTPUTS:
        (out / name).chmod(0o666 & ~umask)


def format_table(table) -> str:
    """The summary as aligned terminal text: rate with its Wilson interval, errors shown apart."""
    cols = [c for c in ("run", "task", "flow_steps") if c in table.columns]
    view = table[cols].copy()
    from reports.summary import short_task_names

    short, note = short_task_names(list(view["task"].unique()))
    note = f"task names shown without the words all share: {note}\n" if note else ""
    view["task"] = view["task"].map(short)
    view = view.rename(columns={"flow_steps": "N"})
    view["n"] = table["n"]
    view["errors"] = table["n_error"]
    view["success [95% CI]"] = [
        "–" if k == 0 else f"{100 * r:5.1f}% [{100 * lo:5.1f}, {100 * hi:5.1f}]"
        for r, lo, hi, k in zip(table["success_rate"], table["ci_low"], table["ci_high"], table["n_valid"])]
    for name, col, digits in (("steps", "steps_mean", 1), ("p50 ms", "policy_ms_p50", 1),
                              ("p95 ms", "policy_ms_p95", 1), ("ep/min", "episodes_per_min", 2)):
        view[name] = table[col].map(lambda x, d=digits: "–" if x != x else f"{x:.{d}f}")
    width = int(view["task"].str.len().max())
    return ("success rate = successes / valid episodes; errors (status != ok) are not failures\n"
            + note + view.to_string(index=False,
                             formatters={"task": lambda t: t.ljust(width)}))

