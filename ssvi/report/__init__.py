"""The report layer: tables and claim verdicts from finished runs (never trains). Stages:

    runs.py        load run dirs, check them against the workflow grid (missing, stale), read ood_shift.json
    select.py      which runs belong to which study; row order
    stats.py       seed statistics: mean, std, 95% intervals; Welch differences and the three verdicts
    tables.py      main, density_sweep, criteria, robustness(+_spread), schedule_ablation
    overlap.py     iou_/spearman_{start,middle,end}, criteria_vs_mean
    evaltables.py  ood, shift, shift_corruptions
    paper.py       the expected-values file and paper_comparison
    claims.py      C1-C6, C2-time, C5-ood, C5-shift: one function per claim in a registry
    render.py      Table, display cells, captions; CSV / Markdown / LaTeX / HTML (+ the report's caption)
    sections.py    the HTML report's order: one category per stage, every table and figure placed
    build.py       build_tables, aggregate (writes every file)

The command line is ``workflow/scripts/aggregate.py``; figure scripts (paper_figures/) read the CSVs.
"""
