"""Errors that carry a one-line message naming the offending file and the problem."""

from __future__ import annotations


class BenchError(Exception):
    """Base class for errors the workflow reports to the user as one line."""


class InputError(BenchError):
    """A file given to the workflow cannot be used. The message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(BenchError):
    """The workflow configuration is inconsistent (beyond what the JSON schema checks)."""


class DownloadError(BenchError):
    """A remote file could not be fetched or failed verification."""


class NotApplicable(BenchError):
    """A method cannot run on this input (e.g. too few genes in its vocabulary).

    The harness records it as a ``not_applicable`` row instead of failing the workflow.
    """
