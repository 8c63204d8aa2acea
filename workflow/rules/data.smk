# Prepare and verify every dataset on the submit host before GPU jobs start (compute nodes often have
# no internet): a missing dataset fails here, early, saying what to download where. Verified are the
# training datasets and every OOD / shift set their evaluation needs (ssvi.shift.datasets_to_verify),
# less the sets `evaluation: {skip: [...]}` names.
#   snakemake --cores 1 prepare_data        # verify (with `download: true`: download) all of them


localrules:
    prepare_data,
    verify_data,


rule prepare_data:
    input:
        [data_record(name) for name in verified_datasets()],


rule verify_data:
    output:
        data_record("{dataset}"),
    params:
        python=PYTHON,
        data_dir=DATA_DIR,
        download="--download" if config.get("download", False) else "",
    log:
        f"{RESULTS}/logs/prepare_data/{{dataset}}.log",
    shell:
        "{params.python} -m ssvi data --dataset {wildcards.dataset} --data-dir {params.data_dir:q} {params.download} "
        "--record {output:q} > {log:q} 2>&1"
