# Tables and figures from finished runs only: these rules never train.
#   snakemake --cores 1 tables_and_figures    regenerate every table and figure from the finished runs
# (it fails, naming them, when runs of the config are unfinished; `snakemake --cores all` runs them).
#   snakemake --report report.html            the tables (as HTML, sortable) and figures with their captions,
# one category per stage in a reader's order (ssvi.report.sections)

FIGURE_NAMES = ["fig1_flops_vs_accuracy", "metrics_vs_density", "criteria_comparison", "robustness_heatmap",
                "robustness_sigma_lines", "schedule_ablation", "iou_matrices", "ood_auroc_vs_density",
                "shift_accuracy_vs_severity", "reliability_diagrams", "risk_coverage"]
# every file the aggregation writes (ssvi.report.build), so a failed aggregation leaves none of them stale
TABLES = [f"{TABLES_DIR}/{name}.{ext}" for name in TABLE_NAMES for ext in TABLE_FILES]
AGGREGATE_EXTRA = [f"{TABLES_DIR}/{name}" for name in AGGREGATE_EXTRA_FILES]
FIGURES = [f"{FIGURES_DIR}/{name}.{ext}" for name in FIGURE_NAMES for ext in ("png", "pdf", "caption.rst")]



localrules:
    resolved_config,
    aggregate,
    figure,
    tables_and_figures,


rule resolved_config:
    output:
        RESOLVED_CONFIG,
    params:
        resolved=RESOLVED_TEXT,  # a changed config re-runs the aggregation
    log:
        f"{RESULTS}/logs/resolved_config.log",
    run:
        from ssvi.files import write_text

        write_text(output[0], params.resolved)


rule aggregate:
    input:
        metrics=all_metrics(),
        evaluations=all_evaluations(),
        config=RESOLVED_CONFIG,
        expected=EXPECTED_VALUES,
    output:
        tables=[report_table(t) if t.endswith(".html") else t for t in TABLES],
        extra=AGGREGATE_EXTRA,
    params:
        command=lambda wc, threads: aggregate_command(threads),
    threads: 1
    log:
        f"{RESULTS}/logs/aggregate.log",
    shell:
        "{params.command} > {log:q} 2>&1"


rule figure:
    input:
        TABLES,
        script="paper_figures/{figure}.py",
    output:
        png=report(
            f"{FIGURES_DIR}/{{figure}}.png",
            caption="../report/figure.rst",
            category=lambda wc: report_section.category(wc.figure, "figure"),
            labels=lambda wc: report_section.labels(wc.figure, "figure"),
        ),
        pdf=f"{FIGURES_DIR}/{{figure}}.pdf",
        caption=f"{FIGURES_DIR}/{{figure}}.caption.rst",
    params:
        command=lambda wc: figure_command(wc.figure),
    log:
        f"{RESULTS}/logs/figures/{{figure}}.log",
    shell:
        "{params.command} > {log:q} 2>&1"


rule tables_and_figures:
    # No outputs, so it always runs when asked for; no run files as inputs, so it never schedules
    # training or evaluation (the DAG would otherwise (re)train every missing or changed run first).
    input:
        finished_runs_only,
    params:
        commands=" && ".join([aggregate_command(1), *map(figure_command, FIGURE_NAMES)]),
    log:
        f"{RESULTS}/logs/tables_and_figures.log",
    shell:
        "({params.commands}) > {log:q} 2>&1"
