"""Sibling projections computed by one matrix product: a decoder layer's query/key/value projections, and its MLP's
gate/up projections, all of which read the same input.

Why: a small model's GPU step is bound by kernel latency, not arithmetic, and a kernel for a few rows costs more than
one for a single row (the bundled Countdown models' CUDA-graph step: 0.88 ms at batch 1, 1.10 ms at batch 8 on an
H200, BENCHMARKS.md), which is what a SPRINT stage's planner and executors decode at. Fusing turns seven products per
Llama layer into four. vLLM and SGLang load these layers fused for the same reason.

How, without touching the model's own forward code: the siblings' weights become views of one concatenated weight
(no second copy), and each sibling's forward returns its slice of the fused product, computed at the first sibling's
call with that input tensor and served to the others from it (they are called with the very same tensor object,
one after the other, in every architecture this applies to).
"""

from __future__ import annotations

import types
from typing import Any

__all__ = ["fuse_projections", "SIBLINGS"]

#: Copy each sibling's slice of the fused product into its own contiguous tensor (no copy for a single row, where the
#: slice already is one). Why: with several rows a slice is strided, and the elementwise kernels after it (rotary,
#: SiLU x up) took PyTorch's slower strided path; on an H200 the bundled models' 8-row decode graph at 4,096 keys went
#: 923 -> 856 us with the copies (and, unexplained, the 1-row graph 727 -> 615 us), a SPRINT solve 610 -> 585 ms
#: (BENCHMARKS.md). False: slices are views.
CONTIGUOUS_SPLITS = True

#: Attribute names of sibling projections, per module that holds them.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class _Fused:
    """One product for several `nn.Linear` siblings; remembers the last input and its outputs' slices."""

    def __init__(self, modules: list[Any], contiguous: bool) -> None:
        import torch

        self.contiguous = contiguous
        self.splits = [m.out_features for m in modules]
        with torch.no_grad():
            self.weight = torch.cat([m.weight for m in modules], dim=0)
            self.bias = torch.cat([m.bias for m in modules]) if modules[0].bias is not None else None
        offset = 0
        for i, m in enumerate(modules):
            n = m.out_features
            m.weight = torch.nn.Parameter(self.weight[offset:offset + n], requires_grad=False)
            if self.bias is not None:
                m.bias = torch.nn.Parameter(self.bias[offset:offset + n], requires_grad=False)
            m.forward = types.MethodType(_member_forward(self, i), m)
            offset += n
        self._x: Any = None
        self._outs: tuple = ()

    def out(self, x, i: int):
        import torch.nn.functional as F

        if self._x is not x:   # the first sibling called with this input computes all of them
            self._outs = F.linear(x, self.weight, self.bias).split(self.splits, dim=-1)
            if self.contiguous:
                self._outs = tuple(o.contiguous() for o in self._outs)
            self._x = x
        return self._outs[i]


def _member_forward(fused: _Fused, i: int):
    def forward(self, x):
        return fused.out(x, i)
    return forward


def fuse_projections(model, contiguous: bool | None = None) -> int:
    """Fuse every group of `SIBLINGS` in `model` whose members are plain `nn.Linear` layers with the same input size,
    dtype, device and bias setting (for inference: the fused weights need no gradient). `contiguous` (default
    `CONTIGUOUS_SPLITS`): hand out contiguous copies of the slices (False where the kernels after them read strided
    rows at full speed: `sprint.backends.kernels`). Returns the groups fused."""
    import torch

    contiguous = CONTIGUOUS_SPLITS if contiguous is None else contiguous
    fused = 0
    for module in model.modules():
        for names in SIBLINGS:
            members = [getattr(module, n, None) for n in names]
            if not all(type(m) is torch.nn.Linear for m in members):
                continue
            first = members[0]
            if any(m.in_features != first.in_features or m.weight.dtype != first.weight.dtype
                   or m.weight.device != first.weight.device or (m.bias is None) != (first.bias is None)
                   for m in members):
                continue
            _Fused(members, contiguous)
            fused += 1
    return fused
