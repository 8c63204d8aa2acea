# One job per run: `python -m ssvi train --evaluate`, resumable (re-running resumes from the last epoch
# checkpoint). It trains, evaluates the posterior (metrics.json) and then, in the same process, its OOD
# detection and distribution shift (ood_shift.json): one interpreter start per run instead of two.
# A run whose resolved config changed (e.g. `run: epochs`) is re-run: the config is a params value, so
# Snakemake's params rerun trigger sees it, and --restart-on-config-change makes the trainer start
# fresh instead of refusing the old checkpoint. A changed `evaluation: skip` re-runs the job too, which
# then only re-evaluates (the final epoch's checkpoint is kept). The sets of `evaluation: {skip: [...]}`
# are not evaluated (ood_shift.json lists them as not_evaluated). Ensemble members (the config's ensembles
# block) also keep their per-set probabilities (eval_probs.pt) for the report layer's ensembles.


rule train:
    input:
        unpack(train_inputs),
    output:
        metrics=f"{RESULTS}/runs/{{dataset}}/{{arch}}/{{method}}/{{variant}}/d{{density}}/seed{{seed}}/metrics.json",
        evaluation=f"{RESULTS}/runs/{{dataset}}/{{arch}}/{{method}}/{{variant}}/d{{density}}/seed{{seed}}/ood_shift.json",
    params:
        python=PYTHON,
        out=lambda wc, output: str(Path(output.metrics).parent),
        run_config=resolved_run_config,
        skip=skip_arguments(),
        keep_probs=keep_probs_argument,
        arguments=lambda wc, threads: train_arguments(wc, threads),
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{arch}}/{{method}}/{{variant}}/d{{density}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}/{{arch}}/{{method}}/{{variant}}/d{{density}}/seed{{seed}}.tsv"
    threads: RESOURCES.get("threads", 1)
    resources:
        gpu=RESOURCES.get("gpu", 0),
        mem_mb=RESOURCES.get("mem_mb", 2000),
        # a retried job (--retries) gets more time: attempt 2 twice, attempt 3 three times
        runtime=lambda wc, attempt: RESOURCES.get("runtime_min", 60) * attempt,
    shell:
        "{params.python} -m ssvi train --out {params.out:q} --restart-on-config-change --evaluate {params.skip} "
        "{params.keep_probs} {params.arguments} > {log:q} 2>&1"


localrules:
    runs,


rule runs:
    # every training run of the config with its evaluation, without tables and figures
    input:
        all_metrics(),
