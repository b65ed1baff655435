"""Errors that carry a one-line message naming the offending file and the problem.

The classes the model needs live in :mod:`cellplm.errors` and are re-exported here (the same classes, so
``except InputError`` catches errors raised on either side); :class:`DownloadError` is the benchmark's own.
"""

from __future__ import annotations

from ..errors import (
    DISK_FULL,
    UNWRITABLE,
    CellPLMError,
    ConfigError,
    InputError,
    NotApplicable,
    OutputError,
    exit_after_output_error,
)

BenchError = CellPLMError  # base class for errors the workflow reports to the user as one line

__all__ = [
    "DISK_FULL",
    "UNWRITABLE",
    "BenchError",
    "ConfigError",
    "DownloadError",
    "InputError",
    "NotApplicable",
    "OutputError",
    "exit_after_output_error",
]


class DownloadError(BenchError):
    """A remote file could not be fetched or failed verification."""
