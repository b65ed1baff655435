"""Write the HTML report's landing page, rendered from the config at start-up (rule landing_page, params.text)."""

from cellplm.bench.io import write_text
from cellplm.bench.job import job

with job(snakemake):
    write_text(snakemake.params.text, snakemake.output[0])
