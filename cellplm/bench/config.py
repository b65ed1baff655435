"""What the libraries read from a workflow config, as the Snakefile holds it (the registries merged in, the
schema's defaults filled): the split variants of a dataset, the name of each method, the config's values as
canonical JSON.

Standard library only: the Snakefile and the report's landing page use it at start-up. The workflow's own
helpers (:mod:`.workflow`) sit on top of it, never below.
"""

from __future__ import annotations

import json


def dataset_splits(config: dict, dataset: str) -> list[str]:
    """Split variants run on a dataset: its own ``splits`` list, else ``run.splits``."""
    return config["datasets"][dataset].get("splits") or config["run"]["splits"]


def method_labels(config: dict) -> dict[str, str]:
    """Method id -> the name shown in tables and plots."""
    return {m: c["label"] for m, c in config["methods"].items()}


def deep_update(base: dict, update: dict) -> dict:
    """A copy of ``base`` with ``update`` merged in, mappings recursively (as Snakemake merges config files)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = deep_update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def to_json(obj) -> str:
    """Canonical JSON (sorted keys, no spaces): a job's ``--params``, and what a settings hash is taken of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
