"""Whether this CPU computes in bfloat16 natively, which decides the `pv/` engine's default CPU dtype.

With AVX512-BF16 or AMX (x86) or the BF16 extension (ARM), a small model runs about twice as fast in bfloat16
as in float32 (benchmarks/README.md, "bf16 on CPU"); without them bfloat16 is emulated and slower, so float32
stays. `PV_CPU_DTYPE=float32` (or `-M dtype=float32`) keeps float32 on any CPU.
"""

from __future__ import annotations

import functools
import os

import torch

from pv_harness.errors import PvError

DTYPE_ENV = "PV_CPU_DTYPE"
NATIVE_BF16 = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")  # torch.cpu.get_capabilities() keys


class DtypeError(PvError, ValueError):
    """A dtype name the engine cannot load a model in."""


@functools.cache
def native_bf16() -> bool:
    """True when the CPU has bfloat16 arithmetic instructions (torch's cpuinfo capabilities say so)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is None:
        return False
    found = capabilities()
    return any(found.get(name) is True for name in NATIVE_BF16)


def default_cpu_dtype() -> torch.dtype:
    """bfloat16 where the CPU does it natively, else float32; `PV_CPU_DTYPE` overrides either way."""
    chosen = os.environ.get(DTYPE_ENV, "").strip().removeprefix("torch.")
    if chosen:
        if chosen not in ("float32", "bfloat16"):
            raise DtypeError(f"{DTYPE_ENV}={chosen!r} is not a CPU dtype: set it to float32 or bfloat16, or unset it")
        return getattr(torch, chosen)
    return torch.bfloat16 if native_bf16() else torch.float32
