"""Load evaluation directories and turn the episodes table into summary and paired-comparison tables.

Input contract (docs/interfaces.md, "eval/ -> reports/"): ``DIR/episodes.parquet`` with one row per
episode and ``DIR/run.json`` with the run's metadata. Everything here is plain pandas so scripts can query
the same tables the report shows.

Episodes whose ``status`` is not ``'ok'`` (``error``, ``sim_unstable``, ``timeout``) are counted in
``n_error`` and shown, never folded into failures: a success rate is ``successes / n_valid`` over the
valid (status ``ok``) episodes only, and paired comparisons drop a pair when either side is not valid.
"""
from __future__ import annotations

import json
import os.path
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from reports.stats import mcnemar_exact, wilson_interval
from vla_flow.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

# pandas is imported inside the functions: `reports/__init__.py` re-exports this module's functions
# (``reports.summary`` must be the function, not this module) and the CLI imports the package for
# `--help`, which must not pay for pandas.
NAN = float("nan")

EPISODES_FILE = "episodes.parquet"
RUN_FILE = "run.json"
KEY = ["task", "init_state", "seed"]  # one episode key; a comparison pairs episodes on it
REQUIRED_COLUMNS = [
    "task", "task_index", "init_state", "flow_steps", "seed", "success", "status", "steps",
    "policy_calls", "wall_s", "policy_ms_p50", "policy_ms_p95", "encode_ms_mean", "flow_ms_mean",
    "env_ms_mean", "video",
]
ALL_TASKS = "(all tasks)"
STAT_COLUMNS = ["n", "n_error", "n_valid", "successes", "success_rate", "ci_low", "ci_high", "steps_mean",
                "steps_median", "policy_ms_p50", "policy_ms_p95", "flow_ms", "episodes_per_min"]


def _read_episodes(directory: Path) -> pd.DataFrame:
    import pandas as pd

    path = directory / EPISODES_FILE
    if not path.is_file():
        hint = "" if directory.is_dir() else f" (the directory {directory} does not exist)"
        raise UserError(
            f"no episodes table at {path}{hint}: pass a directory written by `vla-flow eval` "
            f"(it holds {EPISODES_FILE} and {RUN_FILE}), or rerun the evaluation to create it")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for truncated/garbled files
        raise UserError(
            f"cannot read {path}: {type(exc).__name__}: {exc}. The file is corrupt or not parquet; "
            f"rerun `vla-flow eval` into this directory (it moves the file aside and reruns its episodes) "
            f"or restore the file") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(
            f"{path} lacks required column(s) {missing}; it was not written by this version of "
            f"`vla-flow eval` (see docs/interfaces.md, the episodes table). Re-run the evaluation")
    df = df.copy()
    if "error" not in df.columns:
        df["error"] = ""
    df["success"] = df["success"].fillna(False).astype(bool)
    df["video"] = df["video"].fillna("").astype(str)
    df["error"] = df["error"].fillna("").astype(str)
    df["status"] = df["status"].astype(str)
    return df


def run_names(dirs: Sequence[str | Path]) -> list[str]:
    """Short, unique names for runs: the folder name, or the path as given when names collide."""
    names = [Path(d).resolve().name or str(d) for d in dirs]
    if len(set(names)) < len(names):
        names = [str(d) for d in dirs]
    if len(set(names)) < len(names):
        raise UserError(f"the same evaluation directory was given twice: {list(map(str, dirs))}")
    return names


def load(dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Episodes of one evaluation directory, or of several concatenated with a ``run`` column.

    The ``run`` column holds each directory's name (see :func:`run_names`). Raises ``UserError``
    naming the file and the fix when a table is missing, corrupt or lacks required columns.
    """
    import pandas as pd

    if isinstance(dirs, (str, Path)):
        return _read_episodes(Path(dirs))
    dirs = list(dirs)
    if not dirs:
        raise UserError("no evaluation directory given: pass at least one DIR holding episodes.parquet")
    if len(dirs) == 1:
        return _read_episodes(Path(dirs[0]))
    frames = []
    for name, d in zip(run_names(dirs), dirs):
        frames.append(_read_episodes(Path(d)).assign(run=name))
    return pd.concat(frames, ignore_index=True)


def load_run_meta(directory: str | Path) -> dict:
    """``run.json`` as a dict; ``{}`` when absent (the report then warns), ``UserError`` when corrupt."""
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot parse {path}: {exc}. Fix or delete the file (the report then "
                        f"shows no run metadata), or rerun `vla-flow eval`") from exc
    if not isinstance(meta, dict):
        raise UserError(f"{path} must hold a JSON object, found {type(meta).__name__}")
    return meta


def _group_stats(g: pd.DataFrame) -> dict:
    valid = g[g["status"] == "ok"]
    wins = valid[valid["success"]]
    n_valid, k = len(valid), int(valid["success"].sum())
    low, high = wilson_interval(k, n_valid)
    wall = float(g["wall_s"].sum())
    return {
        "n": len(g), "n_error": len(g) - n_valid, "n_valid": n_valid, "successes": k,
        "success_rate": k / n_valid if n_valid else NAN, "ci_low": low, "ci_high": high,
        "steps_mean": float(wins["steps"].mean()) if k else NAN,
        "steps_median": float(wins["steps"].median()) if k else NAN,
        "policy_ms_p50": float(valid["policy_ms_p50"].median()) if n_valid else NAN,
        "policy_ms_p95": float(valid["policy_ms_p95"].median()) if n_valid else NAN,
        "flow_ms": float(valid["flow_ms_mean"].median()) if n_valid else NAN,  # the flow loop alone (what N changes)
        "episodes_per_min": 60.0 * len(g) / wall if wall > 0 else NAN,
    }


def summary(df: pd.DataFrame, by: Sequence[str] = ("task", "flow_steps")) -> pd.DataFrame:
    """One row per group: counts, success rate with its Wilson 95% interval, steps and latency.

    Columns: ``n`` (all episodes), ``n_error`` (status != 'ok', shown, not failures), ``n_valid``,
    ``successes``, ``success_rate`` (= successes / n_valid), ``ci_low``/``ci_high`` (Wilson 95%),
    ``steps_mean``/``steps_median`` (successful episodes only), ``policy_ms_p50`` (median over valid
    episodes of each episode's median policy-call latency), ``policy_ms_p95`` (median over valid
    episodes of each episode's p95), ``episodes_per_min`` (60 * n / sum of episode wall times: per
    worker, not the run's wall-clock throughput). A ``run`` column is added to ``by`` when present.
    """
    import pandas as pd

    by = list(by)
    if "run" in df.columns and "run" not in by:
        by = ["run"] + by
    bad = [c for c in by if c not in df.columns]
    if bad:
        raise UserError(f"summary: unknown grouping column(s) {bad}; columns are {list(df.columns)}")
    rows = [{**dict(zip(by, key if isinstance(key, tuple) else (key,))), **_group_stats(g)}
            for key, g in df.groupby(by, sort=True)]
    return pd.DataFrame(rows, columns=by + STAT_COLUMNS)


def report_summary(df: pd.DataFrame) -> pd.DataFrame:
    """An overall row per N (task ``(all tasks)``) first, then one row per (task, N)."""
    import pandas as pd

    per_task = summary(df, by=["task", "flow_steps"])
    overall = summary(df, by=["flow_steps"]).assign(task=ALL_TASKS)
    return pd.concat([overall[per_task.columns], per_task], ignore_index=True)


def _keyed(side: pd.DataFrame, label: str) -> pd.DataFrame:
    dup = side[side.duplicated(KEY, keep=False)]
    if len(dup):
        keys = dup[KEY].drop_duplicates().head(5).to_records(index=False).tolist()
        raise UserError(f"{label} has {len(dup)} rows sharing an episode key (task, init_state, seed), "
                        f"e.g. {keys}; a pairing would be ambiguous. Remove the duplicate episodes")
    return side.set_index(KEY)[["success", "status"]]


def _compare(left: pd.DataFrame, right: pd.DataFrame, label_a: str, label_b: str) -> pd.DataFrame:
    """Pair two sides on KEY, refuse unpaired keys, return per-task rows plus an all-tasks row."""
    import pandas as pd

    a, b = _keyed(left, label_a), _keyed(right, label_b)
    only_a, only_b = a.index.difference(b.index), b.index.difference(a.index)
    if len(only_a) or len(only_b):
        parts = [f"{len(ks)} key(s) only in {lab}, e.g. {list(ks[:4])}"
                 for ks, lab in ((only_a, label_a), (only_b, label_b)) if len(ks)]
        raise UserError(f"cannot pair {label_a} with {label_b} on (task, init_state, seed): "
                        + "; ".join(parts) + ". Evaluate the same episode keys on both sides "
                        "(finish or resume the evaluation), or filter the table to the shared keys")
    pairs = pd.merge(a, b, left_index=True, right_index=True, suffixes=("_a", "_b")).reset_index()
    pairs["valid"] = (pairs["status_a"] == "ok") & (pairs["status_b"] == "ok")
    rows = [_pair_stats(g, task) for task, g in pairs.groupby("task", sort=True)]
    rows.append(_pair_stats(pairs, ALL_TASKS))
    return pd.DataFrame(rows)


def _pair_stats(pairs: pd.DataFrame, task: str) -> dict:
    v = pairs[pairs["valid"]]
    sa, sb = v["success_a"].astype(bool), v["success_b"].astype(bool)
    b01, b10, n = int((~sa & sb).sum()), int((sa & ~sb).sum()), len(v)
    rate_a = float(sa.mean()) if n else NAN
    rate_b = float(sb.mean()) if n else NAN
    return {"task": task, "n_pairs": n, "n_excluded": len(pairs) - n, "rate_a": rate_a,
            "rate_b": rate_b, "rate_diff": rate_b - rate_a, "b01": b01, "b10": b10,
            "p_value": mcnemar_exact(b01, b10)}


def _one_run(df: pd.DataFrame, run: str | None) -> pd.DataFrame:
    if "run" not in df.columns:
        if run is not None:
            raise UserError(f"run={run!r} given but the table has a single run (no 'run' column)")
        return df
    runs = sorted(df["run"].unique())
    if run is None:
        if len(runs) > 1:
            raise UserError(f"the table holds several runs {runs}: pass run=... to compare flow steps "
                            f"within one, or use paired_runs to compare runs")
        return df
    if run not in runs:
        raise UserError(f"unknown run {run!r}; runs in the table: {runs}")
    return df[df["run"] == run]


def paired(df: pd.DataFrame, a: int, b: int, run: str | None = None) -> pd.DataFrame:
    """Paired comparison of flow steps ``a`` vs ``b`` on the same (task, init_state, seed) keys.

    Returns one row per task and a last ``(all tasks)`` row with columns ``a``, ``b``, ``n_pairs``
    (pairs where both episodes are valid), ``n_excluded`` (pairs dropped for a non-ok status),
    ``rate_a``, ``rate_b``, ``rate_diff`` (= rate_b - rate_a), ``b01`` (a failed, b succeeded), ``b10``
    (a succeeded, b failed), ``p_value`` (exact McNemar). Raises ``UserError`` listing a few keys when
    either side has keys the other lacks.
    """
    df = _one_run(df, run)
    sides = [df[df["flow_steps"] == n] for n in (a, b)]
    for n, side in zip((a, b), sides):
        if side.empty:
            raise UserError(f"no episodes with flow_steps={n}; present: {sorted(df['flow_steps'].unique())}")
    out = _compare(sides[0], sides[1], f"N={a}", f"N={b}")
    out.insert(1, "a", a)
    out.insert(2, "b", b)
    return out


def paired_runs(df: pd.DataFrame, run_a: str, run_b: str, flow_steps: int) -> pd.DataFrame:
    """Paired comparison of two runs (e.g. two checkpoints) at ``flow_steps`` on the same keys.

    Same columns as :func:`paired`, with ``a``/``b`` holding the run names.
    """
    if "run" not in df.columns:
        raise UserError("paired_runs needs a table with a 'run' column: load(...) several directories")
    sides = []
    for run in (run_a, run_b):
        side = _one_run(df, run)
        side = side[side["flow_steps"] == flow_steps]
        if side.empty:
            raise UserError(f"run {run!r} has no episodes with flow_steps={flow_steps}")
        sides.append(side)
    out = _compare(sides[0], sides[1], f"run {run_a}", f"run {run_b}")
    out.insert(1, "a", run_a)
    out.insert(2, "b", run_b)
    out.insert(3, "flow_steps", flow_steps)
    return out


def paired_points(df: pd.DataFrame, a: tuple[str, int], b: tuple[str, int]) -> pd.DataFrame:
    """Paired comparison of two (run, N) points, e.g. a reflowed checkpoint at N=1 against its teacher at
    N=10, on the same (task, init_state, seed) keys. Same columns as :func:`paired`, with ``a``/``b``
    holding ``"run@N"``. Pairing across N is meaningful because the initial noise is drawn from the episode's
    seed alone (the same for every N and checkpoint)."""
    if "run" not in df.columns:
        raise UserError("paired_points needs a table with a 'run' column: load(...) several directories")
    sides, labels = [], []
    for run, n in (a, b):
        side = _one_run(df, run)
        side = side[side["flow_steps"] == n]
        if side.empty:
            raise UserError(f"run {run!r} has no episodes with flow_steps={n}")
        sides.append(side)
        labels.append(f"{run}@{n}")
    out = _compare(sides[0], sides[1], f"run {labels[0]}", f"run {labels[1]}")
    out.insert(1, "a", labels[0])
    out.insert(2, "b", labels[1])
    return out


@dataclass
class Comparison:
    """One paired comparison for the report: a title and its table, or the reason it was refused."""
    title: str
    table: pd.DataFrame | None = None
    refused: str | None = None


def flow_step_pairs(ns: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive N pairs, then each remaining N against the largest: [1,5,10,20] -> (1,5) (5,10)
    (10,20) (1,20) (5,20)."""
    ns = sorted(set(int(n) for n in ns))
    pairs = list(zip(ns[:-1], ns[1:]))
    return pairs + [(n, ns[-1]) for n in ns[:-2]]


def standard_comparisons(df: pd.DataFrame) -> list[Comparison]:
    """The report's comparisons: :func:`flow_step_pairs` within each run, then the first run (the first
    DIR given) against each other run at every shared N. A refused pairing keeps its message instead of the table."""
    runs = list(dict.fromkeys(df["run"])) if "run" in df.columns else [None]  # order given on the CLI
    out = []
    for run in runs:
        sub = df if run is None else df[df["run"] == run]
        for a, b in flow_step_pairs(sub["flow_steps"].unique()):
            title = f"N={a} (A) vs N={b} (B)" + (f", run {run}" if run is not None else "")
            out.append(_try(title, lambda: paired(sub, a, b, run=run)))
    for other in runs[1:]:
        shared = set(df.loc[df["run"] == runs[0], "flow_steps"]) & set(df.loc[df["run"] == other, "flow_steps"])
        for n in sorted(shared):
            title = f"run {runs[0]} (A) vs run {other} (B) at N={n}"
            out.append(_try(title, lambda: paired_runs(df, runs[0], other, int(n))))
    return out


def _try(title: str, compute) -> Comparison:
    try:
        return Comparison(title, table=compute())
    except UserError as exc:
        return Comparison(title, refused=str(exc))


def short_task_names(names: Sequence[str], width: int = 50) -> tuple[dict[str, str], str]:
    """Readable short task names for tables and plot titles.

    LIBERO-Spatial's tasks all read "pick_up_the_black_bowl_<where>_and_place_it_on_the_plate", so
    cutting long names at either end hides what tells them apart. This drops the words every name
    shares at the start and end, shows underscores as spaces, and returns ``({name: short}, note)``
    where ``note`` is e.g. "pick up the black bowl … and place it on the plate" ('' if nothing was
    dropped). Names starting with "(" (the all-tasks row) pass through.
    """
    tasks = [n for n in dict.fromkeys(names) if not n.startswith("(")]
    words = [re.split(r"[ _]+", n.strip()) for n in tasks]
    head = os.path.commonprefix(words) if len(words) > 1 else []
    tail = os.path.commonprefix([w[::-1] for w in words])[::-1] if len(words) > 1 else []
    if any(len(head) + len(tail) >= len(w) for w in words):  # a name would vanish: keep them whole
        head, tail = [], []
    short = {n: n for n in names}
    for name, w in zip(tasks, words):
        mid = ("… " if head else "") + " ".join(w[len(head): len(w) - len(tail)]) + (" …" if tail else "")
        short[name] = mid if len(mid) <= width else mid[: width - 1] + "…"
    note = " ".join(head + ["…"] + tail) if head or tail else ""
    return short, note
