# Tables and figures from finished runs only: these rules never train.
# `snakemake --cores 1 tables_and_figures` regenerates them from whatever runs the config lists.

TABLE_NAMES = ["main", "paper_comparison", "density_sweep", "criteria", "criteria_vs_mean", "robustness",
               "robustness_spread", "claims", "ood", "shift", "shift_corruptions"] + [f"{kind}_{stage}" for kind in ("iou", "spearman")
                                                 for stage in ("start", "middle", "end")]
FIGURE_NAMES = ["fig1_flops_vs_accuracy", "metrics_vs_density", "criteria_comparison", "robustness_heatmap",
                "iou_matrices", "ood_auroc_vs_density", "shift_accuracy_vs_severity"]
TABLES = [f"{RESULTS}/tables/{name}.{ext}" for name in TABLE_NAMES for ext in ("csv", "md", "tex")]
FIGURES = [f"{RESULTS}/figures/{name}.{ext}" for name in FIGURE_NAMES for ext in ("png", "pdf")]


localrules:
    resolved_config,
    aggregate,
    figure,
    tables_and_figures,


rule resolved_config:
    output:
        f"{RESULTS}/tables/workflow_config.json",
    params:
        resolved=json.dumps(config, sort_keys=True, indent=1),  # a changed config re-runs the aggregation
    log:
        f"{RESULTS}/logs/resolved_config.log",
    run:
        Path(output[0]).write_text(params.resolved)


rule aggregate:
    input:
        metrics=all_metrics(),
        evaluations=all_evaluations(),
        config=f"{RESULTS}/tables/workflow_config.json",
        expected="results/expected/paper.yaml",
    output:
        tables=[report(t, category="Tables") for t in TABLES if t.endswith(".md")]
        + [t for t in TABLES if not t.endswith(".md")],
    params:
        python=PYTHON,
        tables=lambda wc, output: str(Path(output.tables[0]).parent),
        runs=lambda wc, input: " ".join(repr(str(Path(m).parent)) for m in input.metrics),
    log:
        f"{RESULTS}/logs/aggregate.log",
    shell:
        "{params.python} workflow/scripts/aggregate.py --config {input.config:q} --expected {input.expected:q} --require-eval "
        "--out {params.tables:q} {params.runs} > {log:q} 2>&1"


rule figure:
    input:
        TABLES,
        script="paper_figures/{figure}.py",
    output:
        png=report(f"{RESULTS}/figures/{{figure}}.png", category="Figures"),
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
    params:
        python=PYTHON,
        tables=lambda wc, input: str(Path(input[0]).parent),
        figures=lambda wc, output: str(Path(output.png).parent),
    log:
        f"{RESULTS}/logs/figures/{{figure}}.log",
    shell:
        "{params.python} {input.script} --tables {params.tables:q} --out {params.figures:q} > {log:q} 2>&1"


rule tables_and_figures:
    input:
        TABLES,
        FIGURES,
