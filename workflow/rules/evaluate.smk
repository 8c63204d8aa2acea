# OOD detection and distribution shift of every finished run: reads the run's files, never retrains.
# The sets of `evaluation: {skip: [...]}` are not evaluated (ood_shift.json lists them as not_evaluated).


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        f"{RESULTS}/runs/{{dataset}}/{{arch}}/{{method}}/{{variant}}/d{{density}}/seed{{seed}}/ood_shift.json",
    params:
        python=PYTHON,
        data_dir=DATA_DIR,
        skip=skip_arguments(),
        run=lambda wc, input: str(Path(input.metrics).parent),
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}/{{arch}}/{{method}}/{{variant}}/d{{density}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}/{{arch}}/{{method}}/{{variant}}/d{{density}}/seed{{seed}}.tsv"
    threads: RESOURCES.get("threads", 1)
    resources:
        gpu=RESOURCES.get("gpu", 0),
        mem_mb=RESOURCES.get("mem_mb", 2000),
        runtime=lambda wc, attempt: max(10, RESOURCES.get("runtime_min", 60) // 4) * attempt,
    shell:
        "{params.python} -m ssvi evaluate --run {params.run:q} --data-dir {params.data_dir:q} {params.skip} "
        "--threads {threads} > {log:q} 2>&1"
