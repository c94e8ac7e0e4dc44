"""The extraction plugin: ways to turn pooled pos/neg activations into a persona vector.

A method is an accumulator: `add(polarity, pooled)` once per batch, `result()` at the end, one
`[num_layers + 1, hidden]` tensor per pooled kind. The paper's method is the mean difference,
which needs only running sums; `pca` is the second, proving the hook, and keeps the samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from pv_harness.hookspecs import hookimpl


class ExtractionMethod(Protocol):
    def add(self, polarity: str, pooled: dict[str, torch.Tensor]) -> None: ...

    def result(self) -> dict[str, torch.Tensor]: ...


class MeanDiff:
    """mean(pos) - mean(neg) per layer, from running sums (memory flat in the number of samples)."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str], torch.Tensor] = {}
        self.counts = {"pos": 0, "neg": 0}

    def add(self, polarity: str, pooled: dict[str, torch.Tensor]) -> None:
        for kind, batch in pooled.items():
            key = (polarity, kind)
            total = batch.double().sum(0)
            self.sums[key] = self.sums[key] + total if key in self.sums else total
        self.counts[polarity] += next(iter(pooled.values())).shape[0]

    def means(self, polarity: str) -> dict[str, torch.Tensor]:
        return {kind: s / self.counts[polarity] for (pol, kind), s in self.sums.items() if pol == polarity}

    def result(self) -> dict[str, torch.Tensor]:
        if not self.counts["pos"] or not self.counts["neg"]:
            raise ValueError("mean difference needs at least one pos and one neg sample")
        pos, neg = self.means("pos"), self.means("neg")
        return {kind: (pos[kind] - neg[kind]).float() for kind in pos}


class FirstPrincipalComponent:
    """First principal component of all pooled samples per layer, oriented and scaled like the mean
    difference (its projection onto the mean difference equals the mean difference's norm), so
    steering coefficients stay comparable. Keeps every sample: memory grows with samples."""

    def __init__(self) -> None:
        self.samples: dict[tuple[str, str], list[torch.Tensor]] = {}
        self.mean_diff = MeanDiff()

    def add(self, polarity: str, pooled: dict[str, torch.Tensor]) -> None:
        self.mean_diff.add(polarity, pooled)
        for kind, batch in pooled.items():
            self.samples.setdefault((polarity, kind), []).append(batch.float())

    def result(self) -> dict[str, torch.Tensor]:
        reference = self.mean_diff.result()
        out = {}
        for kind, diff in reference.items():
            x = torch.cat(self.samples[("pos", kind)] + self.samples[("neg", kind)])  # [N, L+1, H]
            x = (x - x.mean(0)).transpose(0, 1).double()  # [L+1, N, H]
            _, _, vh = torch.linalg.svd(x, full_matrices=False)
            direction = vh[:, 0, :]  # [L+1, H], unit rows
            along = (direction * diff.double()).sum(-1, keepdim=True)  # signed size of the mean diff on it
            out[kind] = (direction * along).float()
        return out


BUILTIN: dict[str, Callable[[], ExtractionMethod]] = {"mean_diff": MeanDiff, "pca": FirstPrincipalComponent}


@hookimpl
def register_extraction_methods(register: Callable[..., None]) -> None:
    for name, factory in BUILTIN.items():
        register(name, factory)
