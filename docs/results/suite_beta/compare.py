"""The suite tables of README "Lever measured on the suite": the shifted-Beta suite policy (this folder)
against the uniform-t suite policy (docs/results/suite_spatial) on the same keys, recomputed from the committed
rows: python docs/results/suite_beta/compare.py"""
import sys, pandas as pd
from reports.summary import load
from reports.stats import mcnemar_exact, wilson_interval
new = load(sys.argv[1] if len(sys.argv) > 1 else "docs/results/suite_beta")
old = load("docs/results/suite_spatial")
keys = ["task_index", "init_state", "seed"]
names = dict(zip(new.task_index, new.task))
def succ(df, n):
    d = df[(df.flow_steps == n) & (df.status == "ok")]
    return d.set_index(keys)["success"].astype(bool)
n10, o10, n1 = succ(new, 10), succ(old, 10), succ(new, 1)
def cell(s):
    k, n = int(s.sum()), len(s); lo, hi = wilson_interval(k, n)
    return f"{k}/{n} = {100*k/n:.1f}% [{100*lo:.1f}, {100*hi:.1f}]"
def mc(a, b):  # a baseline, b new
    g, l = int((~a & b).sum()), int((a & ~b).sum()); return f"{g} / {l}, p = {mcnemar_exact(g, l):.2g}"
print("| task | old policy, N=10 | Beta policy, N=10 | gained / lost, McNemar |")
print("|---|---|---|---|")
b = o10.reindex(n10.index)
print(f"| **suite (pooled)** | **{cell(b)}** | **{cell(n10)}** | {mc(b, n10)} |")
for t in range(10):
    a = n10[n10.index.get_level_values(0) == t]; bb = o10.reindex(a.index)
    print(f"| {t} | {cell(bb)} | {cell(a)} | {mc(bb, a)} |")
i = n1.index; a10 = n10.reindex(i); b10 = o10.reindex(i)
print("\nN=1 on", len(i), ": beta N1", cell(n1), "beta N10", cell(a10), "N1 vs N10:", mc(a10, n1), "; beta N1 vs old N10:", mc(b10, n1))
