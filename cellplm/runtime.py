"""Device and numeric precision: where the model runs and whether matrix products use bf16.

``precision="auto"`` takes bf16 autocast where the hardware has native bf16 matrix units (CUDA compute
capability 8 or newer; x86 CPUs with AVX512-BF16 or AMX) and float32 elsewhere. The sparse gene-embedding sum,
the flow-attention normalisers and all losses stay in float32 either way. ``"fp32"`` reproduces upstream's
arithmetic exactly (the parity tests use it).

Also the one home of device resolution for the benchmark's methods and speed jobs (peak memory:
:mod:`cellplm.memory`).
Standard library only at import (torch is imported by the functions that need it): the scGPT environment
(torch 2.3) and the pretraining options (parsed by Snakemake) import this module too.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def resolve_device(device: str | None = "auto", unavailable: type[Exception] = ConfigError) -> torch.device:
    """``"auto"`` (or empty): CUDA if visible, else CPU; a CUDA device that is not visible raises ``unavailable``
    (:class:`ConfigError`; the scGPT method passes :class:`NotApplicable`)."""
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise unavailable(f"device {device!r} requested but no CUDA GPU is visible")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    import torch

    if device.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # "fp32" or "bf16"

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "auto") -> "Runtime":
        dev = resolve_device(device)
        return cls(dev, resolve_precision(precision, dev))

    def autocast(self):
        import torch

        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> str:
        return f"{device_name(self.device)}, {self.precision}"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU with the threads torch uses."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"
