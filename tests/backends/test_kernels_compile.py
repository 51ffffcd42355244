"""The fused Triton kernels compile for an H100 (sm_90) with Triton's own toolchain, no GPU needed.

Why: the kernels' other tests run under Triton's interpreter on a CPU, which accepts code that the compiler
refuses (a name assigned in both branches of a runtime `if` must keep one type, for one). A kernel that does not
compile falls back to slower paths at run time with only a warning, so a CPU-only change could cost a GPU run's
numbers unnoticed. The compile runs in a subprocess: this process may have imported Triton under its interpreter.
Skipped where Triton or its CUDA backend (ptxas) is missing; only a `CompilationError` fails the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r'''
import inspect, json, sys, traceback
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.errors import CompilationError
from sprint.backends import kernels as K

POINTERS = {"mask_ptr": "*u8", "part_ptr": "*fp32", "src_ptr": "*i32", "len_ptr": "*i32", "s_ptr": "*fp32",
            "slot_ptr": "*i64", "pos_ptr": "*i64"}
FLOATS = ("scale", "eps", "inv_n")
CASES = []
for dt in ("bf16", "fp32"):
    ieee = dt == "fp32"
    for mask in (True, False):
        for shared in (True, False):
            for block_g, iters in ((16, 1), (1, 2)):
                CASES.append(("_attention_part_kernel", dt, dict(HAS_MASK=mask, SHARED=shared, DIM=64,
                              BLOCK_G=block_g, BLOCK_N=64, ITERS=iters, IEEE=ieee)))
    CASES.append(("_attention_join_kernel", dt, dict(DIM=64, BLOCK_G=16, SPLITS=64)))
    CASES += [("_rms_norm_kernel", dt, dict(BLOCK=256)), ("_silu_mul_kernel", dt, dict(BLOCK=1024)),
              ("_rotary_kernel", dt, dict(N_HEADS=8, HALF=32, BLOCK=32)),
              ("_kv_write_kernel", dt, dict(DIM=64, BLOCK=64))]
    for mask in (True, False):
        CASES += [("_softmax_kernel", dt, dict(HAS_MASK=mask, BLOCK=4096)),
                  ("_softmax_part_kernel", dt, dict(HAS_MASK=mask, BLOCK=4096)),
                  ("_softmax_finish_kernel", dt, dict(HAS_MASK=mask, BLOCK=4096, PARTS=4))]
out = []
for name, dt, constexprs in CASES:
    fn = getattr(K, name)
    names = list(inspect.signature(fn.fn).parameters)
    signature = {n: "constexpr" if n in constexprs else POINTERS.get(n, "*" + dt if n.endswith("_ptr") else
                 "fp32" if n in FLOATS else "i32") for n in names}
    if name == "_attention_join_kernel":
        signature["part_ptr"] = "*fp32"
    src = ASTSource(fn=fn, signature=signature, constexprs={(names.index(n),): v for n, v in constexprs.items()})
    try:
        triton.compile(src, target=GPUTarget("cuda", 90, 32))
        out.append([name, dt, constexprs, "ok", ""])
    except CompilationError as e:
        out.append([name, dt, constexprs, "error", str(e)[-800:]])
    except Exception as e:   # no CUDA backend or toolchain here: not the kernels' fault
        out.append([name, dt, constexprs, "unavailable", f"{type(e).__name__}: {e}"[-400:]])
        break
print(json.dumps(out))
'''


def test_the_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        pytest.skip(f"the compile check could not run here: {done.stderr[-400:]}")
    results = json.loads(done.stdout.strip().splitlines()[-1])
    if any(status == "unavailable" for *_, status, _ in results):
        pytest.skip(f"Triton cannot compile for CUDA here: {results[-1][-1]}")
    failed = [r for r in results if r[3] != "ok"]
    assert not failed, failed
    assert len(results) == 38
