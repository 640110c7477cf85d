"""The suite tables of README "Lever measured on the suite", recomputed from the committed rows:

    python docs/results/suite_beta/compare.py

1. the shifted-Beta suite policy (this folder) against the uniform-t suite policy (docs/results/suite_spatial)
   at N=10, per task, on every episode key both hold;
2. the Beta policy at N=1 against N=10 on the keys evaluated at N=1;
3. the levers tried on top of the Beta policy (docs/results/suite_reflow at N=1, docs/results/suite_long at
   N=10), each paired with the Beta policy on the keys the lever was evaluated on;
4. the 40,000-step policy (docs/results/suite_long) at every N it was evaluated at (1, 2, 5, 10), each
   against its own N=10, and its N=1 against the Beta policy's N=1, on the keys both hold;
5. the reflow of the 40,000-step policy (docs/results/suite_long_reflow) at N=1 against that policy's N=1
   and N=10, per task, on the keys the reflow was evaluated on;
6. the N=1 levers measured on init states 0-9 of every task (100 keys): the 40k policy from x0 = 0
   (``eval.noise_scale=0``, docs/results/suite_long_zero) at N=1 and at N=10 (docs/results/suite_long_zero10),
   the 40,000-step reflow (docs/results/suite_long_reflow40k; a rerun of it started from x0 = 0 in
   docs/results/suite_long_reflow40k_zero, the same checkpoint from N(0, I) in docs/results/suite_long_reflow40k_amd),
   the one-step distillation of the x0 = 0 path (docs/results/suite_long_distill0: `vla-flow reflow
   --noise-scale 0`), the 10,000-step reflow and the distillation,
   each against the 40k policy's N=1 and N=10 from N(0, I) noise on the same keys;
7. more demonstrations on the three failing tasks (docs/results/suite_more: the preset retrained on the 392
   demos plus 59 more on random layouts of tasks 2, 4 and 9) at N=10, against the 40k policy at N=10, per
   task, on the keys it was evaluated on;
8. the one-step distillation of the x0 = 0 path (docs/results/suite_long_distill0) at N=1 from x0 = 0 on
   every key it was evaluated on, per task, against the 40k policy's N=1 and N=10;
9. replanning every 4 control steps instead of 8 (docs/results/suite_long_replan4: the 40k policy unchanged,
   ``eval.n_action_steps=4``) at N=10, against the same policy executing whole chunks, per task;
10. where the distillation of section 8 loses (tasks 3 and 6): the teacher's own N=10 from x0 = 0, the map
   the student was trained to reproduce (docs/results/suite_long_zero10 for init states 0-9,
   docs/results/suite_long_zero10_t36 for 10-49), against the teacher from N(0, I) and the student.
Episodes pair by (task, init_state, seed): the initial noise comes from the seed alone, so it is the same
for every N and checkpoint.
"""
from pathlib import Path

import pandas as pd

from reports.stats import mcnemar_exact, wilson_interval
from reports.summary import load

ROOT = Path("docs/results")
KEYS = ["task_index", "init_state", "seed"]


def success(run: str, n: int) -> pd.Series:
    """Success (bool) per episode key of ``run`` at N=``n``; episodes with an error are left out."""
    df = load(ROOT / run)
    d = df[(df.flow_steps == n) & (df.status == "ok")]
    return d.set_index(KEYS)["success"].astype(bool)


def cell(s: pd.Series) -> str:
    k, n = int(s.sum()), len(s)
    lo, hi = wilson_interval(k, n)
    return f"{k}/{n} = {100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def mc(a: pd.Series, b: pd.Series) -> str:
    """b against baseline a on the same keys: episodes gained / lost, exact McNemar p."""
    g, l = int((~a & b).sum()), int((a & ~b).sum())
    return f"{g} / {l}, p = {mcnemar_exact(g, l):.2g}"


def shared(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    i = a.index.intersection(b.index)
    return a.reindex(i), b.reindex(i)


def per_task(rows: list[tuple[str, pd.Series]], base: int = 0, pooled: str = "suite (pooled)") -> None:
    """Markdown table: one column per (label, series) on the keys all share, McNemar of the last vs ``base``;
    the first row pools every key (``pooled`` names it: the suite, or the tasks a lever ran on)."""
    idx = rows[0][1].index
    for _, s in rows[1:]:
        idx = idx.intersection(s.index)
    cols = [(label, s.reindex(idx)) for label, s in rows]
    print("| task | " + " | ".join(label for label, _ in cols) + " | gained / lost, McNemar |")
    print("|---" * (len(cols) + 2) + "|")
    a, b = cols[base][1], cols[-1][1]
    print(f"| **{pooled}** | " + " | ".join(f"**{cell(s)}**" for _, s in cols) + f" | {mc(a, b)} |")
    for t in sorted(set(idx.get_level_values(0))):
        m = idx.get_level_values(0) == t
        print(f"| {t} | " + " | ".join(cell(s[m]) for _, s in cols) + f" | {mc(a[m], b[m])} |")


if __name__ == "__main__":
    beta10, old10, beta1 = success("suite_beta", 10), success("suite_spatial", 10), success("suite_beta", 1)
    print("## 1. N=10: uniform-t suite policy against the Beta policy\n")
    per_task([("uniform t, N=10", old10), ("Beta, N=10", beta10)])
    print("\n## 2. Beta policy: N=10 against N=1\n")
    per_task([("Beta, N=10", beta10), ("Beta, N=1", beta1)])
    a, b = shared(old10, beta1)
    print(f"\nBeta N=1 against the uniform policy's N=10 on the same {len(a)} keys: {cell(b)} vs {cell(a)}, {mc(a, b)}")
    levers = [("suite_reflow", 1, "reflow of the Beta policy, N=1"), ("suite_long", 10, "40,000 steps bf16, N=10")]
    for run, n, label in levers:
        if not (ROOT / run / "episodes.parquet").is_file():
            continue
        lever = success(run, n)
        print(f"\n## 3. {label} (docs/results/{run}), paired with the Beta policy\n")
        per_task([("Beta, N=10", beta10), ("Beta, N=1", beta1), (label, lever)] if n == 1
                 else [("Beta, N=10", beta10), (label, lever)])
        if n == 1:  # the table's McNemar is against Beta N=10; the reflow's own effect is against Beta N=1
            a, b = shared(beta1, lever)
            print(f"\n{label} against Beta N=1 on the same {len(a)} keys: {cell(b)} vs {cell(a)}, {mc(a, b)}")
        else:
            a, b = shared(old10, lever)
            print(f"\n{label} against the uniform policy's N=10 on the same {len(a)} keys: {cell(b)} vs {cell(a)}, {mc(a, b)}")
    long_ns = sorted(set(load(ROOT / "suite_long").flow_steps), reverse=True) \
        if (ROOT / "suite_long" / "episodes.parquet").is_file() else []
    if 1 in long_ns:
        long = {n: success("suite_long", n) for n in long_ns}
        print("\n## 4. 40,000 steps bf16: N=" + ", ".join(map(str, long_ns)) + " (McNemar: N=1 against N=10)\n")
        per_task([(f"40k, N={n}", long[n]) for n in long_ns])
        for n in long_ns[1:]:
            a, b = shared(long[10], long[n])
            print(f"\n40k N={n} against 40k N=10 on the same {len(a)} keys: {cell(b)} vs {cell(a)}, {mc(a, b)}")
        for label, base in (("Beta N=1", beta1), ("Beta N=10", beta10), ("uniform N=10", old10)):
            a, b = shared(base, long[1])
            print(f"\n40k N=1 against {label} on the same {len(a)} keys: {cell(b)} vs {cell(a)}, {mc(a, b)}")
    if 1 in long_ns and (ROOT / "suite_long_reflow" / "episodes.parquet").is_file():
        reflow1 = success("suite_long_reflow", 1)
        print("\n## 5. reflow of the 40k policy, N=1 (docs/results/suite_long_reflow); McNemar against 40k N=10\n")
        per_task([("40k, N=10", long[10]), ("40k, N=1", long[1]), ("40k reflow, N=1", reflow1)])
        a, b = shared(long[1], reflow1)
        print(f"\n40k reflow N=1 against 40k N=1 on the same {len(a)} keys: {cell(b)} vs {cell(a)}, {mc(a, b)}")
        ms = {label: load(ROOT / run).query("flow_steps == @n and status == 'ok'").flow_ms_mean.median()
              for label, run, n in (("40k N=10", "suite_long", 10), ("40k N=1", "suite_long", 1),
                                    ("40k reflow N=1", "suite_long_reflow", 1))}
        print("\nflow loop per call (median over episodes of the per-episode mean, ms): "
              + ", ".join(f"{k} {v:.2f}" for k, v in ms.items())
              + f"; reflow N=1 / 40k N=10 = {ms['40k reflow N=1'] / ms['40k N=10']:.2f}")

    levers6 = [("suite_long_zero", 1, "40k, x0 = 0, N=1"), ("suite_long_zero10", 10, "40k, x0 = 0, N=10"),
               ("suite_long_reflow40k", 1, "reflow 40k steps, N=1"),
               ("suite_long_reflow40k_zero", 1, "reflow 40k steps (rerun) from x0 = 0, N=1"),
               ("suite_long_reflow40k_amd", 1, "reflow 40k steps (rerun) from N(0, I), N=1"),
               ("suite_long_distill0", 1, "one-step distillation of the x0 = 0 path, N=1 from 0"),
               ("suite_long_reflow80k", 1, "reflow 80k steps, N=1"), ("suite_long_reflow", 1, "reflow 10k steps, N=1"),
               ("suite_long_distill", 1, "reflow + distill, N=1")]
    if 1 in long_ns and (ROOT / "suite_long_zero" / "episodes.parquet").is_file():
        print("\n## 6. N=1 levers on init states 0-9 of every task; each against the 40k policy's N=1 and N=10\n")
        print("| lever | success | vs 40k N=1: gained / lost, McNemar | vs 40k N=10: gained / lost, McNemar |")
        print("|---|---|---|---|")
        keys = success("suite_long_zero", 1).index
        for label, base in (("40k, N=1", long[1]), ("40k, N=10", long[10])):
            print(f"| {label} (N(0, I)) | {cell(base.reindex(keys))} | | |")
        for run, n, label in levers6:
            if not (ROOT / run / "episodes.parquet").is_file():
                continue
            lever = success(run, n)
            lever = lever.reindex(lever.index.intersection(keys))
            a1, b1 = shared(long[1], lever)
            a10, b10 = shared(long[10], lever)
            print(f"| {label} | {cell(lever)} | {mc(a1, b1)} | {mc(a10, b10)} |")
        if (ROOT / "suite_long_reflow40k_zero" / "episodes.parquet").is_file():
            a, b = shared(success("suite_long_reflow40k", 1), success("suite_long_reflow40k_zero", 1))
            print(f"\nreflow 40k from x0 = 0 (rerun) against reflow 40k from N(0, I) on the same {len(a)} keys: "
                  f"{cell(b)} vs {cell(a)}, {mc(a, b)}")
        for base, other, what in (("suite_long_reflow40k", "suite_long_reflow40k_amd", "the rerun (2x pairs, this "
                                   "AMD) against the Xeon reflow, both from N(0, I)"),
                                  ("suite_long_reflow40k_amd", "suite_long_reflow40k_zero", "the rerun from x0 = 0 "
                                   "against the same checkpoint from N(0, I)"),
                                  ("suite_long_reflow40k_zero", "suite_long_distill0", "distillation of the x0 = 0 "
                                   "path against the rerun reflow from x0 = 0")):
            if all((ROOT / r / "episodes.parquet").is_file() for r in (base, other)):
                a, b = shared(success(base, 1), success(other, 1))
                print(f"\n{what}, N=1, on the same {len(a)} keys: {cell(b)} vs {cell(a)}, {mc(a, b)}")

    if 1 in long_ns and (ROOT / "suite_more" / "episodes.parquet").is_file():
        more10 = success("suite_more", 10)
        print("\n## 7. more demos on tasks 2, 4, 9 (docs/results/suite_more), N=10; McNemar against 40k N=10\n")
        per_task([("40k, N=10", long[10]), ("40k + 59 demos of tasks 2, 4, 9, N=10", more10)],
                 pooled="tasks 2, 4, 9 (pooled)")
        a, b = shared(long[10], more10)
        for label, tasks in (("tasks 2, 4, 9", {2, 4, 9}), ("the other tasks", set(range(10)) - {2, 4, 9})):
            m = a.index.get_level_values(0).isin(tasks)
            if m.any():
                print(f"\n{label}: {cell(b[m])} vs {cell(a[m])} on the same {int(m.sum())} keys, {mc(a[m], b[m])}")

    if 1 in long_ns and (ROOT / "suite_long_distill0" / "episodes.parquet").is_file():
        d1 = success("suite_long_distill0", 1)
        print("\n## 8. one-step distillation of the 40k policy's x0 = 0 path (docs/results/suite_long_distill0), "
              "N=1 from x0 = 0, on every key it was evaluated on; McNemar against 40k N=10\n")
        per_task([("40k, N=10", long[10]), ("40k, N=1", long[1]), ("distilled, N=1", d1)])
        a, b = shared(long[1], d1)
        print(f"\ndistilled N=1 against 40k N=1 on the same {len(a)} keys: {cell(b)} vs {cell(a)}, {mc(a, b)}")
        a, b = shared(long[10], d1)
        print(f"distilled N=1 minus 40k N=10: {100 * (b.mean() - a.mean()):+.1f} points on {len(a)} keys")
        ms = load(ROOT / "suite_long_distill0").query("flow_steps == 1 and status == 'ok'").flow_ms_mean.median()
        print(f"flow loop per call (median over episodes of the per-episode mean): {ms:.2f} ms")

    if 1 in long_ns and (ROOT / "suite_long_replan4" / "episodes.parquet").is_file():
        r10 = success("suite_long_replan4", 10)
        print("\n## 9. replanning every 4 steps (docs/results/suite_long_replan4: the 40k policy, eval.n_action_steps=4),"
              " N=10; McNemar against the same policy executing all 8 actions of each chunk\n")
        per_task([("40k, 8 of 8 actions, N=10", long[10]), ("40k, first 4 of 8, N=10", r10)],
                 pooled="tasks 2, 4, 9 (pooled)")
        both = load(ROOT / "suite_long_replan4").query("flow_steps == 10 and status == 'ok'").set_index(KEYS)
        whole = load(ROOT / "suite_long").query("flow_steps == 10 and status == 'ok'").set_index(KEYS)
        whole = whole.reindex(both.index)
        rate = lambda d: d.policy_calls.sum() / d.steps.sum()  # noqa: E731
        print(f"\npolicy calls (image encodes) per control step on these keys: {rate(both):.3f} against "
              f"{rate(whole):.3f}")

    if (ROOT / "suite_long_zero10_t36" / "episodes.parquet").is_file() and 1 in long_ns:
        z = pd.concat([success("suite_long_zero10", 10), success("suite_long_zero10_t36", 10)])
        z = z[z.index.get_level_values(0).isin([3, 6])]
        d1 = success("suite_long_distill0", 1)
        print("\n## 10. tasks 3 and 6: the teacher's N=10 from x0 = 0 (docs/results/suite_long_zero10 + "
              "suite_long_zero10_t36), the map the student learnt; McNemar: distilled N=1 against it\n")
        per_task([("40k, N=10 from N(0, I)", long[10]), ("40k, N=10 from 0", z), ("distilled, N=1 from 0", d1)],
                 base=1, pooled="tasks 3, 6 (pooled)")
        a, b = shared(long[10], z)
        print(f"\nteacher from 0 against teacher from N(0, I), N=10, same {len(a)} keys: {cell(b)} vs {cell(a)}, "
              f"{mc(a, b)}")
