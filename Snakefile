# CellPLM cell-type annotation benchmark.
#   snakemake --cores 8 --use-conda                          full reproduction (config/config.yaml)
#   snakemake --cores 2 --configfile config/demo.yaml        offline demo
#   snakemake --report results/report.html                   self-contained HTML report
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# The report's landing page, written by the landing_page rule from the config (rules/report.smk). Absolute, as
# Snakemake resolves this path against the Snakefile's folder, and the page lies in the working directory.
report: os.path.join(os.getcwd(), "results/report/workflow.rst")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/cellplm.smk"
include: "rules/models.smk"
include: "rules/methods.smk"
include: "rules/embeddings.smk"
include: "rules/metrics.smk"
include: "rules/speed.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
