"""Link a CellPLM checkpoint (local files or a download) into its provenance-named folder as model.*."""

import os
from pathlib import Path

from cellplm.bench.io import write_json
from cellplm.bench.workflow import job

with job(snakemake):
    inp, out = snakemake.input, snakemake.output
    for src, dest in ((inp.config, out.config), (inp.weights, out.weights)):
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        os.symlink(Path(src).resolve(), dest)  # never copied: the released weights are ~330 MB
        print(f"{dest} -> {Path(src).resolve()}")
    p = snakemake.params
    write_json({"source": p.source, "kind": p.kind, "config": str(Path(inp.config).resolve()),
                "weights": str(Path(inp.weights).resolve()),
                "urls": {Path(k).name: v for k, v in p.url.items()}}, out.provenance)
