"""TransformersBackend on a CUDA GPU: the fast path there computes the same model as the exact path on the CPU.

Skipped without a GPU (CI has none); run on a GPU machine with `python -m pytest -q -m gpu`.
"""

from __future__ import annotations

import asyncio

import pytest

torch = pytest.importorskip("torch")

from sprint.backends.base import GenerationParams  # noqa: E402
from sprint.backends.transformers_backend import TransformersBackend  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.integration,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PROMPTS = ["Let me think step by step.", "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9",
           ("Okay, so I need to find x. If 2^8 = 4^x then x = 4. Let me think step by step. First, compute 2 + 3 = 5. "
            "Then 5 * 4 = 20. So the answer is 20. ") * 3]


class LogitLog:
    """Records (token ids so far, next-token logits) for every sampled token."""

    def __init__(self):
        self.seen: dict[tuple[int, ...], object] = {}

    def __call__(self, tokens, logits):
        self.seen[tuple(tokens)] = logits.detach().float().cpu()


def _generate_all(backend, prompts, max_tokens):
    async def go():
        params = GenerationParams(max_tokens=max_tokens)
        return await asyncio.gather(*(backend.generate(p, params) for p in prompts))
    return asyncio.run(asyncio.wait_for(go(), 120))


def test_cuda_fast_mode_matches_cpu_exact_mode(noisy_llama_dir):
    """float32 on both devices: the GPU's fused kernels may round differently, but only at the 1e-3 level."""
    cpu_log, gpu_log = LogitLog(), LogitLog()
    _generate_all(TransformersBackend(str(noisy_llama_dir), device="cpu", dtype="float32", on_logits=cpu_log),
                  PROMPTS, 8)
    gpu = TransformersBackend(str(noisy_llama_dir), device="cuda", dtype="float32", on_logits=gpu_log)
    assert gpu.device.type == "cuda" and not gpu.exact
    _generate_all(gpu, PROMPTS, 8)
    shared = cpu_log.seen.keys() & gpu_log.seen.keys()
    assert len(shared) >= 8
    for key in shared:
        assert (cpu_log.seen[key] - gpu_log.seen[key]).abs().max() < 1e-2


def test_bundled_countdown_model_gives_the_same_greedy_plan_on_cuda():
    """The bundled SPRINT model's first planner call: the same greedy text on the GPU (its default dtype) as on the
    CPU (float32); a plan is short enough that bf16 rounding should not flip a greedy choice of this model."""
    from sprint.format import layout
    from sprint.models import resolve_model
    from sprint.tasks.countdown.loader import load_countdown

    path = resolve_model("countdown-sprint")
    item = load_countdown(n=1, seed=1)[0]
    prompt = layout.generation_start(layout.prompt_prefix(item.question, "sprint"))
    cpu = _generate_all(TransformersBackend(path, device="cpu"), [prompt], 48)[0]
    gpu = _generate_all(TransformersBackend(path, device="cuda"), [prompt], 48)[0]
    assert cpu.text.strip() and gpu.text == cpu.text


class Inline:
    """An executor that runs the backend's forward passes in the calling thread (so torch.profiler sees them)."""

    def submit(self, fn, *args, **kwargs):
        from concurrent.futures import Future

        fut = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
            fut.set_exception(e)
        return fut


def test_cuda_decode_step_synchronises_once_whatever_the_context(noisy_llama_dir):
    """One host<->device synchronisation per decode step (the `.tolist()` of the picked tokens), after a short
    prompt as after a 1,000-token one: counted by CUDA's sync debug mode around each forward pass."""
    import warnings

    backend = TransformersBackend(str(noisy_llama_dir), device="cuda", dtype="bfloat16", cuda_graphs=False)
    backend.eos_ids = set()
    counts, inner = [], backend._step

    def step(rows, ids, positions, sample, *steps):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                return inner(rows, ids, positions, sample, *steps)
            finally:
                torch.cuda.set_sync_debug_mode(0)
                if len(ids) == 1 == len(rows.segments):
                    counts.append((max(positions), [f"{w.filename}:{w.lineno}" for w in caught
                                                    if "synchroniz" in str(w.message)]))

    backend._step = step
    for prompt in (PROMPTS[0], PROMPTS[2] * 6):
        _generate_all(backend, [prompt], 12)
    assert max(pos for pos, _ in counts) > 900 and min(pos for pos, _ in counts) < 40
    assert all(len(sites) == 1 for _, sites in counts), counts


def test_cuda_fast_mode_keeps_attention_off_cudnn(noisy_llama_dir):
    """cuDNN attention builds a plan per distinct shape and every decode step has one key more: the fast path's
    attention stays off it (bf16, where cuDNN would be eligible)."""
    backend = TransformersBackend(str(noisy_llama_dir), device="cuda", dtype="bfloat16", cuda_graphs=False)
    backend._executor = Inline()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _generate_all(backend, PROMPTS, 8)
    names = {e.key for e in prof.key_averages()}
    assert not [n for n in names if "cudnn_attention" in n], sorted(names)
    # Decoding rows attend through two matrix products (`sprint.backends.decode_attention`), prefills through SDPA.
    assert "aten::bmm" in names, sorted(names)
    assert torch.backends.cuda.cudnn_sdp_enabled()   # restored after each forward pass


def test_cuda_graphs_match_the_eager_fast_mode(noisy_llama_dir):
    """Decode steps replayed from CUDA graphs give the eager fast mode's logits (float32, to 1e-3) and greedy text,
    with requests of different lengths (slot holes, several buckets) and a capacity change; prefill steps stay eager."""
    eager_log, graph_log = LogitLog(), LogitLog()
    prompts = PROMPTS + [PROMPTS[2] * 2 + " So"]
    eager = TransformersBackend(str(noisy_llama_dir), device="cuda", dtype="float32", on_logits=eager_log,
                                cuda_graphs=False)
    want = _generate_all(eager, prompts, 200)
    graphs = TransformersBackend(str(noisy_llama_dir), device="cuda", dtype="float32", on_logits=graph_log)
    got = _generate_all(graphs, prompts, 200)
    # Different kernels' rounding could flip a near-tie of the random model and fork one text: most must agree.
    assert sum(a.text == b.text for a, b in zip(got, want)) >= 3
    g = graphs._graphs
    assert graphs.stats.graph_steps > 150 and g.captures >= 2 and not g.disabled
    assert all(entry.graph is not None for entry in g.graphs.values())
    shared = eager_log.seen.keys() & graph_log.seen.keys()
    assert len(shared) >= 0.9 * len(eager_log.seen)
    for key in shared:
        assert (eager_log.seen[key] - graph_log.seen[key]).abs().max() < 1e-3


def test_bundled_countdown_model_same_greedy_plan_with_cuda_graphs():
    """The bundled SPRINT model's first planner call gives the same greedy text with CUDA graphs as without."""
    from sprint.format import layout
    from sprint.models import resolve_model
    from sprint.tasks.countdown.loader import load_countdown

    path = resolve_model("countdown-sprint")
    item = load_countdown(n=1, seed=1)[0]
    prompt = layout.generation_start(layout.prompt_prefix(item.question, "sprint"))
    eager = _generate_all(TransformersBackend(path, device="cuda", cuda_graphs=False), [prompt], 200)[0]
    graphs = TransformersBackend(path, device="cuda")   # the CUDA default
    got = _generate_all(graphs, [prompt], 200)[0]
    assert got.text == eager.text and graphs.stats.graph_steps > 0


def test_bundled_sprint_solve_runs_its_executor_prefills_in_graphs():
    """A whole SPRINT solve of the bundled model on the CUDA default: the executors' short prompt prefills replay
    multi-row graphs and the planner's reads of the executions long-prefill graphs (so few eager steps), and the
    run ends in an answer as the eager solve does (texts may fork at a near-tie, so only completion is compared)."""
    from sprint.inference.orchestrator import SprintConfig, solve
    from sprint.models import default_settings, resolve_model
    from sprint.tasks.countdown.loader import load_countdown

    path = resolve_model("countdown-sprint")
    item = load_countdown("test", 1, 1, question_order="sorted")[0]
    config = SprintConfig(**default_settings("countdown-sprint", "sprint"))
    results = {}
    for graphs in (False, True):
        backend = TransformersBackend(path, device="cuda", cuda_graphs=graphs)
        results[graphs] = asyncio.run(asyncio.wait_for(solve(item.question, backend, config, backend.tokenizer), 300))
        if graphs:
            multi = [k for k in backend._graphs.graphs if k[1] > 1]
            eager = backend.stats.forward_passes - backend.stats.graph_steps
            assert multi and eager <= 2 * results[graphs].stages + 2, (multi, eager, results[graphs].stages)
    assert all(r.answer for r in results.values())


def test_multi_step_graphs_write_what_single_steps_write(noisy_llama_dir):
    """Captured blocks of greedy decode steps (each fed the previous argmax inside the graph) give the greedy text of
    graphs taking one step at a time, with requests of different lengths and limits that end inside a block."""
    prompts = PROMPTS + [PROMPTS[2] * 2 + " So"]
    texts, replays = [], []
    for steps in (1, 4):
        backend = TransformersBackend(str(noisy_llama_dir), device="cuda", dtype="float32", decode_steps=steps)
        backend.eos_ids = set()

        async def go():
            return await asyncio.gather(*(backend.generate(p, GenerationParams(max_tokens=n))
                                          for p, n in zip(prompts, (37, 50, 9, 61))))
        texts.append([c.text for c in asyncio.run(asyncio.wait_for(go(), 120))])
        replays.append(backend.stats.graph_steps)
        if steps == 4:
            g = backend._graphs
            assert any(k[4] == 4 and entry.graph is not None for k, entry in g.graphs.items()) and not g.disabled
    assert replays[1] < 0.5 * replays[0]
    # Different shapes may round differently: a near-tie of the random model could fork one text, not most.
    assert sum(a == b for a, b in zip(*texts)) >= 3


def test_a_sprint_solve_reads_its_shared_prefixes_from_their_source_slots():
    """Executors copy their planner's prefix into their own slots; the split decode attention reads those positions
    from the source slot instead (`SlotCache.shares`). A whole SPRINT solve with that gives the same text as with
    every slot reading its own copy, and the sharing did take place."""
    from sprint.backends import transformers_backend as tb
    from sprint.inference.orchestrator import SprintConfig, solve
    from sprint.models import default_settings, resolve_model
    from sprint.tasks.countdown.loader import load_countdown

    path = resolve_model("countdown-sprint")
    item = load_countdown("test", 1, 1, question_order="sorted")[0]
    config = SprintConfig(**default_settings("countdown-sprint", "sprint"))
    shares, used = tb.SlotCache.shares, []

    def counted(self, slot):
        root, n = shares(self, slot)
        used.append(n)
        return root, n

    texts = {}
    for mode in ("own copies", "shared"):
        tb.SlotCache.shares = counted if mode == "shared" else (lambda self, slot: (slot, 0))
        try:
            backend = TransformersBackend(path, device="cuda")
            texts[mode] = asyncio.run(asyncio.wait_for(
                solve(item.question, backend, config, backend.tokenizer), 300)).trajectory
        finally:
            tb.SlotCache.shares = shares
    assert any(n > 0 for n in used)
    assert texts["shared"] == texts["own copies"]


def test_prefills_among_decoding_rows_replay_split_graphs(noisy_llama_dir):
    """A long prompt that joins while other requests decode runs as graph replays (the decoding rows in one, the
    prefill in a one-slot graph of its slot: `decode_graphs.partition`), with the eager fast mode's logits (float32, to
    1e-3) and text."""
    logs, texts, kinds = [LogitLog(), LogitLog()], [], []
    for graphs, log in zip((False, True), logs):
        backend = TransformersBackend(str(noisy_llama_dir), device="cuda", dtype="float32", on_logits=log,
                                      cuda_graphs=graphs)
        backend.eos_ids = set()
        if graphs:
            step = backend._graphs.step
            backend._graphs.step = lambda *a, s=step, g=backend._graphs: (s(*a), kinds.append(g.last_kind))[0]

        async def go(b=backend):
            first = asyncio.create_task(b.generate(PROMPTS[0], GenerationParams(max_tokens=300)))
            await asyncio.sleep(0.05)
            later = [asyncio.create_task(b.generate(PROMPTS[2] + tail, GenerationParams(max_tokens=20)))
                     for tail in ("", " So")]
            return [await first, *[await t for t in later]]
        texts.append([c.text for c in asyncio.run(asyncio.wait_for(go(), 120))])
    assert any(k and k.startswith("split") for k in kinds), kinds
    assert sum(a == b for a, b in zip(*texts)) >= 2
    shared = logs[0].seen.keys() & logs[1].seen.keys()
    assert len(shared) >= 0.9 * len(logs[0].seen)
    for key in shared:
        assert (logs[0].seen[key] - logs[1].seen[key]).abs().max() < 1e-3
