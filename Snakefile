# ssvi-bench: SSVI vs dense VI, gradual pruning, post-hoc compression and static sparse VI.
#   snakemake --cores all                                   embedded default (digits, CPU, minutes)
#   snakemake --profile slurm --configfile config/paper.yaml   the paper's grid on SLURM GPU nodes
#   snakemake --cores 1 tables_and_figures                  regenerate tables/figures from finished runs
#   snakemake --report report.html                          every table and figure in one HTML file
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless --configfile names another config: that one then replaces it instead of
# being merged into it (merged, the demo's `run:` values would silently shrink the paper's models).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
