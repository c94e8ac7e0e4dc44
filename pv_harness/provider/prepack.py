"""Faster float32 and bfloat16 linear layers on CPU: weights repacked once into oneDNN's blocked layout.

Decoding multiplies a few rows (the batch) by every weight matrix at every step. PyTorch's default CPU
GEMM re-reads the plain row-major weight each time; oneDNN with a prepacked weight (what torch.compile's
CPU "freezing" does) is about 1.7x faster for the decoder's matrices and 2x for the vocabulary projection
at batch 1..8 on AVX-512 machines, in float32, with the same results up to summation order (~1e-6
relative). In bfloat16 (the default on CPUs with native bf16, `provider.cpu`) the packed layers beat plain bf16
`nn.Linear` too (1.4-2.6x at 1..64 rows on AVX512-BF16/AMX, SmolLM2's matrices, one thread, medians of
interleaved rounds on a shared machine; benchmarks/README.md "bf16 on CPU"), so both dtypes are packed (bf16 only
where the CPU does it natively: unmeasured elsewhere); other dtypes are left alone. The packed copy costs one
extra copy of the linear weights in memory, so models whose linear weights exceed `MAX_BYTES` are left alone,
and so are matrices under `MIN_ELEMENTS`. Only exact `torch.nn.Linear` modules are touched, and packing is
checked against the plain layer before it is used.
The packed copy is taken once: change the weights afterwards and call `unpack_linears` first.

oneDNN builds (and keeps) a primitive for every input row count it sees, about 1 MB each for a small
model's matrices, so a stream of prompts of every length would grow memory by hundreds of MB. Long inputs
therefore run in chunks of `CHUNK_ROWS` rows, each padded with zero rows to a multiple of `ROW_MULTIPLE`:
at most about 30 row counts ever reach oneDNN, whatever the lengths, for a few % of padded rows.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from pv_harness.provider.cpu import native_bf16

logger = logging.getLogger(__name__)
MAX_BYTES = 4 * 2**30
MIN_ELEMENTS = 2**18  # smaller matrices are as fast plain (and oneDNN's per-call cost would dominate)
ROW_MULTIPLE = 16  # row counts up to this pass as they are (decoding batches); longer ones are padded to it
CHUNK_ROWS = 256
PACKED_DTYPES = (torch.float32, torch.bfloat16)
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}  # packed vs plain, relative (summation order, rounding)


def _onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _packed_forward(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if x.dtype != packed.dtype or x.device.type != "cpu" or torch.is_grad_enabled() and x.requires_grad:
        raise RuntimeError(f"these prepacked linear layers are for {packed.dtype} CPU inference only")
    rows = x.numel() // x.shape[-1]
    if rows <= ROW_MULTIPLE:
        return _onednn_linear(x, packed, bias)
    flat = x.reshape(rows, x.shape[-1])
    outs = []
    for start in range(0, rows, CHUNK_ROWS):
        chunk = flat[start:start + CHUNK_ROWS]
        extra = -len(chunk) % ROW_MULTIPLE
        padded = torch.nn.functional.pad(chunk, (0, 0, 0, extra)) if extra else chunk
        outs.append(_onednn_linear(padded, packed, bias)[: len(chunk)])
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def can_prepack(model: Any) -> bool:
    """CPU, float32 (or bfloat16 on a CPU with native bf16), oneDNN available, and the linear weights small enough
    to keep a packed copy."""
    params = list(model.parameters())
    if not params or params[0].device.type != "cpu" or params[0].dtype not in PACKED_DTYPES:
        return False
    if params[0].dtype == torch.bfloat16 and not native_bf16():
        return False
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    size = sum(m.weight.numel() * m.weight.element_size() for m in _linears(model))
    return 0 < size <= MAX_BYTES


def _linears(model: Any) -> list[torch.nn.Linear]:
    return [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.numel() >= MIN_ELEMENTS]


def prepack_linears(model: Any) -> int:
    """Repack every float32 or bfloat16 `nn.Linear` of a CPU model for inference; returns how many were packed."""
    if not can_prepack(model):
        return 0
    linears = _linears(model)
    try:
        with torch.no_grad():
            probe = linears[0]
            packed = torch.ops.mkldnn._reorder_linear_weight(probe.weight.detach(), None)
            x = torch.randn(3, probe.in_features, dtype=probe.weight.dtype)
            expected = torch.nn.functional.linear(x, probe.weight, probe.bias).float()
            got = _packed_forward(packed, probe.bias, x).float()
            tol = TOLERANCE[probe.weight.dtype]
            if not torch.allclose(got, expected, rtol=tol, atol=tol * float(expected.abs().max()) + 1e-6):
                raise RuntimeError("packed linear disagrees with the plain one")
    except Exception as ex:  # noqa: BLE001 - any failure means: keep the plain layers
        logger.warning("not prepacking linear layers: %s", ex)
        return 0
    cache: dict[int, torch.Tensor] = {}
    for module in linears:
        weight = module.weight.detach()
        if weight.data_ptr() not in cache:  # tied weights (embeddings / lm_head) are packed once
            cache[weight.data_ptr()] = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        bias = module.bias.detach() if module.bias is not None else None
        module.forward = functools.partial(_packed_forward, cache[weight.data_ptr()], bias)  # type: ignore[method-assign]
    return len(linears)


def unpack_linears(model: Any) -> None:
    """Undo `prepack_linears` (the plain weights were never changed)."""
    for module in model.modules():
        if type(module) is torch.nn.Linear and "forward" in module.__dict__:
            del module.forward
