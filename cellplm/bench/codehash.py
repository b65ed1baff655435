"""The hash of the code one workflow job runs (``params: code=`` of every rule), so that Snakemake reruns a job
only when that code changed, and the static reading of import statements it is built on (:func:`imported_names`,
which the architecture tests use too).

Standard library only: the Snakefile computes the hashes while it parses the workflow.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path


def code_hash(root: Path, *entries: str) -> str:
    """sha256 (first 16 hex digits) of the code one job runs.

    ``entries`` are scripts (paths from the workflow root) or modules (``cellplm.bench.methods.__main__``). Their
    code is every ``cellplm`` module they import, directly or through others (read from the import statements,
    including those inside functions, so lazy imports count, and from the ``_EXPORTS`` of packages whose names are
    imported on first use), the ``__init__`` of each package on the way, the method (and embedding) folders'
    ``method.yaml`` (``embedding.yaml``) beside any of their modules, and ``cellplm/resources`` when the model
    package is among them. A module imported by name at run time (the method registry's) is not followed: a
    method's jobs name their method's module themselves.

    The Snakefile asks for the same few hashes once per job (hundreds of jobs in the full config): each file is
    parsed once per version (size, mtime), the file set of each entry list is found once a process, and the hash is
    computed again only when a file of the set changed.
    """
    root = Path(root)
    files = sorted(_code_files(root, entries))
    return _files_hash(root, tuple((path, *_stamp(path)) for path in files))


@functools.lru_cache(maxsize=None)
def _code_files(root: Path, entries: tuple[str, ...]) -> frozenset:
    """The files whose content :func:`code_hash` hashes (see there); found once a process, as :func:`_module_files`."""
    files = set()
    for entry in entries:
        if entry.endswith(".py"):
            files.add(root / entry)
            for _, module in imported_names(root / entry, None):
                files |= _module_files(root, module)
        else:
            files |= _module_files(root, entry)
    for path in list(files):
        for metadata in ("method.yaml", "embedding.yaml"):
            if (path.parent / metadata).exists():
                files.add(path.parent / metadata)
    if any(_is_model_file(root, path) for path in files):
        files |= {p for p in (root / "cellplm" / "resources").iterdir() if p.suffix != ".md"}
    return frozenset(files)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=None)
def _files_hash(root: Path, stamped: tuple[tuple[Path, int, int], ...]) -> str:
    """sha256 of the relative path and content of each file, in the given order (the stamps only key the cache)."""
    h = hashlib.sha256()
    for path, _, _ in stamped:
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def imported_names(path: Path, module: str | None) -> list[tuple[int, str]]:
    """(line, dotted name) of everything the file at ``path`` imports, anywhere in it (lazy imports inside
    functions too).

    ``module`` is the file's own dotted name (``cellplm.bench.methods.base``; None for a script), from which
    relative imports are resolved. ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a submodule), and a
    package's ``_EXPORTS`` mapping (names imported on first use, :mod:`cellplm._lazy`) gives its submodules.
    """
    return list(_imported_names(Path(path), module, *_stamp(Path(path))))


@functools.lru_cache(maxsize=None)
def _imported_names(path: Path, module: str | None, size: int, mtime_ns: int) -> tuple[tuple[int, str], ...]:
    """:func:`imported_names`, parsed once a process for each version (size, mtime) of a file: the code hashes of
    the workflow's jobs read the same modules over and over."""
    package = None
    if module is not None:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = parts[: len(parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_EXPORTS" for t in node.targets):
            found += [
                (node.lineno, f"{package}{v.value}")
                for v in getattr(node.value, "values", [])
                if isinstance(v, ast.Constant) and str(v.value).startswith(".")
            ]
    return tuple(found)


def module_name(root: Path, path: Path) -> str:
    """Dotted name of the module at ``path`` (a file under ``root``, the folder that holds the top package)."""
    parts = Path(path).relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_model_file(root: Path, path: Path) -> bool:
    rel = path.relative_to(root).parts
    return rel[0] == "cellplm" and (len(rel) < 2 or rel[1] != "bench")


@functools.lru_cache(maxsize=None)
def _module_path(root: Path, name: str) -> Path | None:
    """The file of module ``name`` under ``root``; None for a name that is no module (a class, a function)."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=None)
def _module_files(root: Path, name: str) -> frozenset:
    """The file of module ``name``, the __init__ of its packages, and every cellplm module it imports (transitively)."""
    seen: dict[str, Path] = {}
    todo = [name] if _is_cellplm(name) else []
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__, then a/b/c
            parent = ".".join(parts[:i])
            if parent in seen:
                continue
            path = _module_path(root, parent)
            if path is None:
                continue
            seen[parent] = path
            todo += [m for _, m in imported_names(path, parent) if _is_cellplm(m)]
    return frozenset(seen.values())


def _is_cellplm(name: str) -> bool:
    return name == "cellplm" or name.startswith("cellplm.")
