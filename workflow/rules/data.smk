# Prepare and verify every dataset on the submit host before GPU jobs start (compute nodes often have
# no internet): a missing dataset fails here, early, saying what to download where.


localrules:
    prepare_data,


rule prepare_data:
    output:
        f"{RESULTS}/data/{{dataset}}.json",
    params:
        python=PYTHON,
        data_dir=DATA_DIR,
        download="--download" if config.get("download", False) else "",
    log:
        f"{RESULTS}/logs/prepare_data/{{dataset}}.log",
    shell:
        "{params.python} -m ssvi data --dataset {wildcards.dataset} --data-dir {params.data_dir:q} {params.download} "
        "--record {output:q} > {log:q} 2>&1"
