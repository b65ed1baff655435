"""The catalog of dataset files: the demo data shipped inside installed packages (:data:`BUILTIN`) and the remote
files each configured source downloads (:func:`remote_files`).

Standard library only: the Snakefile reads it while it builds the job graph, and :mod:`.sources` when it
records where a dataset came from.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# name: (package, path inside the package, what it is)
BUILTIN = {
    "pbmc68k_reduced": (
        "scanpy",
        "datasets/10x_pbmc68k_reduced.h5ad",
        "700 PBMCs (10x), log-normalised .raw plus n_counts; 10 labels in bulk_labels",
    ),
}


def package_file(package: str, relpath: str) -> Path:
    """Locate a data file inside an installed package without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed; it ships the demo data")
    return Path(list(spec.submodule_search_locations)[0]) / relpath


def builtin_path(name: str) -> Path:
    if name not in BUILTIN:
        raise KeyError(f"unknown builtin dataset {name!r}; choose from {sorted(BUILTIN)}")
    package, relpath, _ = BUILTIN[name]
    return package_file(package, relpath)


def remote_files(source: dict) -> list[dict]:
    """The files a dataset source downloads: [{url, filename, sha256, mirrors, version_id, as_of}]."""

    def entry(spec: dict, url: str | None = None, filename: str | None = None) -> dict:
        return {
            "url": url or spec["url"],
            "filename": filename or spec["filename"],
            "sha256": spec.get("sha256"),
            "mirrors": list(spec.get("mirrors") or []),
            "version_id": spec.get("version_id"),
            "as_of": str(spec["as_of"]) if spec.get("as_of") else None,
        }

    kind = source["kind"]
    if kind in ("download", "archive"):
        return [entry(source)]
    if kind == "cellxgene":  # a dataset id (with an optional version pin or date), or a dataset version id alone
        ident = source.get("dataset_id") or source["version_id"]
        spec = source if source.get("dataset_id") else {**source, "version_id": None}
        return [entry(spec, url=f"cellxgene://{ident}", filename=f"cellxgene_{ident}.h5ad")]
    if kind == "pbmc12k":
        return [entry(f) for f in source["files"]]
    return []
