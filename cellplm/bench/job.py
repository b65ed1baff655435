"""What every workflow script runs its body in: :func:`job` (``with job(snakemake): ...``).

Standard library only, so that a script's code hash (:mod:`.codehash`) covers this module and nothing of the
Snakefile's helpers.
"""

from __future__ import annotations

import contextlib
import sys
import traceback

from .errors import BenchError, OutputError, exit_after_output_error


@contextlib.contextmanager
def job(snakemake):
    """Run a workflow script's body with stdout/stderr going to its log.

    A :class:`BenchError` (bad input, failed download, ...) ends the job with its one-line message on the
    console and in the log, without a traceback; anything else logs the full traceback.
    """
    console = sys.stderr
    log_path = snakemake.log[0] if len(snakemake.log) else None
    log = open(log_path, "w", buffering=1) if log_path else console
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log
    try:
        yield log
    except BenchError as e:
        print(f"ERROR: {e}", file=log)
        print(f"ERROR: {e}", file=console)
        if isinstance(e, OutputError):
            if log is not console:
                log.close()
            exit_after_output_error()
        raise SystemExit(1) from None
    except Exception:
        traceback.print_exc(file=log)
        raise
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        if log is not console:
            log.close()
