"""Reports stage: summary tables with Wilson intervals, exact McNemar paired tests, plot and HTML page.

Public API: ``load(DIR or [DIRs])``, ``summary(df, by=[...])``, ``paired(df, a=N1, b=N2)``,
``paired_runs(df, run_a, run_b, flow_steps)``,
``paired_points(df, (run_a, n_a), (run_b, n_b))``, ``report_summary(df)``, ``standard_comparisons(df)``;
the CLI is ``vla-flow report`` (reports/commands.py). ``reports.summary`` is the function (it shadows
the submodule of the same name: import module members with ``from reports.summary import ...``).
The submodules import pandas/scipy lazily, so importing this package for ``vla-flow --help`` is cheap.
"""
from reports.summary import (load, load_run_meta, paired, paired_points, paired_runs, report_summary,
                             standard_comparisons, summary)

__all__ = ["load", "load_run_meta", "paired", "paired_points", "paired_runs", "report_summary",
           "standard_comparisons", "summary"]
