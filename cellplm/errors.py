"""Errors of the CellPLM package that carry a one-line message naming the offending file and the problem.

Standard library only. The benchmark (:mod:`cellplm.bench.errors`) re-exports these very classes and adds its own.
"""

from __future__ import annotations

import errno
import os
import sys

# Write errors of the local disk, not of the data: retrying cannot help, freeing space or fixing permissions can.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class CellPLMError(Exception):
    """Base class for errors reported to the user as one line (``cellplm.bench.errors.BenchError`` is this class)."""


class InputError(CellPLMError):
    """A file given to the workflow cannot be used. The message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(CellPLMError):
    """The configuration is inconsistent (beyond what the JSON schema checks)."""


class OutputError(CellPLMError):
    """An output could not be written (disk full, folder not writable). Nothing half-written is left behind.

    :func:`exit_after_output_error` ends the process after reporting it.
    """


class NotApplicable(CellPLMError):
    """A method cannot run on this input (e.g. too few genes in its vocabulary).

    The harness records it as a ``not_applicable`` row instead of failing the workflow.
    """


def exit_after_output_error(code: int = 1) -> None:
    """End the process at once, skipping interpreter teardown.

    After a failed write, HDF5 may still hold buffers for the file it could not write and crash (SIGSEGV) while
    flushing them at exit; the job would then look like a crash instead of ending with its one-line message.
    """
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)
