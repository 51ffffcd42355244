"""TransformersBackend on a tiny random Llama: batch invariance, prefix reuse, stops, limits, streaming, sampling."""

from __future__ import annotations

import asyncio

import pytest

from sprint.backends.base import Backend, GenerationParams
from sprint.backends.transformers_backend import TransformersBackend

pytestmark = pytest.mark.integration

PROMPTS = [
    "Let me think step by step.",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9",
    "Based on execution_1.1, execution_1.2: we combine the results.",
    "Okay",
]
LONG = ("Okay, so I need to find x. If 2^8 = 4^x then x = 4. Let me think step by step. First, compute 2 + 3 = 5. "
        "Then 5 * 4 = 20. So the answer is 20. ") * 3


def run(coro, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def together(backend, calls):
    """Run (prompt, params) calls concurrently."""
    return await asyncio.gather(*(backend.generate(p, params) for p, params in calls))


@pytest.fixture
def make(noisy_llama_dir):
    def build(**kw) -> TransformersBackend:
        kw.setdefault("device", "cpu")
        return TransformersBackend(str(noisy_llama_dir), **kw)
    return build


class LogitLog:
    """Records (token ids so far, next-token logits) for every sampled token."""

    def __init__(self):
        self.seen: dict[tuple[int, ...], object] = {}

    def __call__(self, tokens, logits):
        self.seen[tuple(tokens)] = logits.clone()

    def differences(self, other: "LogitLog") -> tuple[set, float]:
        """(the token prefixes both logs saw, the largest absolute logit difference over them)."""
        shared = self.seen.keys() & other.seen.keys()
        return shared, max((float((self.seen[k] - other.seen[k]).abs().max()) for k in shared), default=0.0)


def test_batched_equals_one_at_a_time_bit_for_bit(make):
    params = GenerationParams(max_tokens=24)
    alone_log, batch_log = LogitLog(), LogitLog()
    alone = []
    for p in PROMPTS:   # each prompt alone, on a fresh backend
        alone.append(run(make(on_logits=alone_log).generate(p, params)))
    backend = make(on_logits=batch_log)
    assert isinstance(backend, Backend)
    batched = run(together(backend, [(p, params) for p in PROMPTS]))
    assert [c.text for c in batched] == [c.text for c in alone]
    assert [c.generated_tokens for c in batched] == [24] * 4
    assert backend.stats.max_sequences_in_step == 4          # they really decoded side by side
    assert backend.stats.forward_passes < 4 * 24
    # Not only the argmax: every next-token distribution is bitwise the same.
    assert alone_log.seen.keys() == batch_log.seen.keys() and len(alone_log.seen) == 4 * 24
    for key, logits in alone_log.seen.items():
        assert logits.equal(batch_log.seen[key])


def test_requests_join_a_running_batch(make):
    params = GenerationParams(max_tokens=20)
    ref = [run(make().generate(p, params)).text for p in PROMPTS[:3]]
    backend = make(max_batch=8)

    async def staggered():
        tasks = []
        for p in PROMPTS[:3]:
            tasks.append(asyncio.create_task(backend.generate(p, params)))
            await asyncio.sleep(0.02)   # later requests arrive while earlier ones decode
        return await asyncio.gather(*tasks)

    assert [c.text for c in run(staggered())] == ref


def test_prefix_reuse_prefills_only_the_suffix(make):
    backend = make()
    params = GenerationParams(max_tokens=4)
    first = run(backend.generate(LONG, params))
    n_long = len(backend.encode_prompt(LONG))
    assert first.prompt_tokens == n_long and first.cached_prompt_tokens == 0
    assert backend.stats.prefilled_tokens == n_long
    second_prompt = LONG + "Therefore the answer is 4."
    before = backend.stats.prefilled_tokens
    second = run(backend.generate(second_prompt, params))
    suffix = second.prompt_tokens - second.cached_prompt_tokens
    assert second.cached_prompt_tokens >= n_long - 1    # the shared prefix (up to a token merged at the border)
    assert backend.stats.prefilled_tokens - before == suffix <= backend.count_tokens("Therefore the answer is 4.") + 1
    assert suffix < second.prompt_tokens // 4
    # Reused KV gives exactly what a fresh backend computes from scratch.
    assert second.text == run(make().generate(second_prompt, params)).text


def test_prefix_cache_keeps_arrays_drops_covered_entries_and_clears():
    """The finished sequences' cache compares numpy arrays (lists are converted once, on entry); an entry that a new
    one extends is dropped, a new one that an entry covers is not added, and the token count follows."""
    import numpy as np

    from sprint.backends.transformers_backend import KVStore, _common_prefix, _PrefixCache

    def store(n):
        st = KVStore()
        st.length = n
        return st

    cache = _PrefixCache(max_tokens=100)
    cache.add([1, 2, 3], store(3))
    cache.add([1, 2, 3, 4, 5], store(5))   # extends the first: it goes
    cache.add([1, 2], store(2))            # covered: not added
    assert [t.tolist() for t, _ in cache.entries.values()] == [[1, 2, 3, 4, 5]] and cache.tokens == 5
    assert all(isinstance(t, np.ndarray) for t, _ in cache.entries.values())
    assert _common_prefix(np.array([1, 2, 9]), next(iter(cache.entries.values()))[0]) == 2
    assert _common_prefix([1, 2], [1, 2, 3]) == 2 and _common_prefix([], [1]) == 0 and _common_prefix([5], [6]) == 0
    cache.clear()
    assert not cache.entries and cache.tokens == 0


def test_executor_reuses_a_running_planner_and_matches_fresh(make):
    backend = make()
    log, fresh_log = LogitLog(), LogitLog()
    backend.on_logits = log

    async def scenario():
        planner = backend.stream(LONG, GenerationParams(max_tokens=30))
        seen = ""
        async for delta in planner:
            seen += delta
            if len(seen) > 10:
                break   # "eager dispatch": an executor starts while the planner is still writing
        executor_prompt = LONG + seen + " Now"
        ex = await backend.generate(executor_prompt, GenerationParams(max_tokens=10))
        await planner.aclose()
        return executor_prompt, ex

    prompt, ex = run(scenario())
    assert ex.cached_prompt_tokens >= backend.count_tokens(LONG)
    fresh = make(on_logits=fresh_log)
    ref = run(fresh.generate(prompt, GenerationParams(max_tokens=10)))
    assert ex.text == ref.text and ref.cached_prompt_tokens == 0
    for key, logits in fresh_log.seen.items():
        assert logits.equal(log.seen[key])


def test_stop_string_across_token_borders_is_cut_exactly(make):
    backend = make()
    params = GenerationParams(max_tokens=30)
    full = run(backend.generate(PROMPTS[1], params)).text
    tok = backend.tokenizer
    ids = tok(full, add_special_tokens=False)["input_ids"]
    pieces = [tok.decode(ids[:k]) for k in range(len(ids) + 1)]
    # A stop string made of the end of one token and the start of the next (and a third when short).
    k = len(ids) // 2
    stop = pieces[k + 2][len(pieces[k]) - 1:]
    assert len(tok(stop, add_special_tokens=False)["input_ids"]) >= 2 or len(stop) > 2
    expected = full[:full.index(stop)]

    async def streamed():
        st = make().stream(PROMPTS[1], GenerationParams(max_tokens=30, stop=["never appears", stop]))
        deltas = [d async for d in st]
        return deltas, st.completion

    deltas, comp = run(streamed())
    assert "".join(deltas) == comp.text == expected
    assert comp.stop_string == stop and comp.finish_reason == "stop"
    assert comp.generated_tokens < 30


@pytest.mark.parametrize("exact", [True, False])
def test_text_is_emitted_while_the_next_step_runs_and_a_stop_keeps_consistent_kv(make, exact):
    """A step's text (detokenizing, stop strings, the callers' queues) is emitted while the next forward pass runs.
    A request its stop string ends then still has a row in that pass: its token is dropped, its generated count and
    text are as if it had stopped at once, and its KV goes to the prefix cache and its slot is freed only after the
    pass (reused by a later prompt, bit for bit in exact mode)."""
    backend = make(exact=exact, max_batch=2)
    params = GenerationParams(max_tokens=30)
    full = run(backend.generate(PROMPTS[1], params)).text
    # A stop string inside no added token's text (one that is, a SPRINT tag, ends its request before the next step:
    # test_a_stop_token_ends_its_request_before_the_next_launch).
    added = backend.tokenizer.get_added_vocab()
    at = next(i for i in range(len(full) // 2, len(full) - 3) if not any(full[i:i + 3] in t for t in added))
    stop = full[at:at + 3]
    emitted_while_stepping = []
    original = backend._emit
    backend._emit = lambda reqs: (emitted_while_stepping.append(backend._stepping) if reqs else None,
                                  original(reqs))[1]
    generated_before = backend.stats.generated_tokens
    c = run(backend.generate(PROMPTS[1], GenerationParams(max_tokens=30, stop=[stop])))
    assert c.text == full[:full.index(stop)] and c.finish_reason == "stop" and c.stop_string == stop
    assert backend.stats.generated_tokens - generated_before == c.generated_tokens
    assert emitted_while_stepping and all(emitted_while_stepping)
    assert not backend._deferred and not backend._active
    if not exact:
        assert sorted(backend._slots.free) == [0, 1]
    # The stopped request's KV serves a later prompt that extends it.
    reused = backend.stats.reused_prompt_tokens
    again = run(backend.generate(PROMPTS[1] + c.text, GenerationParams(max_tokens=5)))
    assert backend.stats.reused_prompt_tokens - reused > len(backend.encode_prompt(PROMPTS[1]))
    fresh = run(make(exact=exact).generate(PROMPTS[1] + c.text, GenerationParams(max_tokens=5)))
    assert again.text == fresh.text


@pytest.mark.parametrize("graphs", [False, True])
def test_text_work_waits_for_the_step_launch(make, graphs):
    """The previous step's text is emitted only after the next step is on the device (a graph replay queued, or an
    eager step begun): the worker thread needs the GIL to launch it, which the text work would hold. (A step done
    before the scheduler awaited it once let its done-callback settle the *next* step's launch future: a flaky
    ordering this caught.)"""
    backend = make(exact=False, max_batch=2)
    if graphs:
        backend = _with_padded_decode(backend)
    state = {"launched": False}
    order = []
    inner = backend._step

    def step(rows, ids, positions, sample, steps=1, launched=None):
        state["launched"] = False

        def signal():
            state["launched"] = True
            launched()

        return inner(rows, ids, positions, sample, steps, signal)

    original = backend._emit
    backend._step = step
    backend._emit = lambda reqs: (order.append(state["launched"]) if reqs else None, original(reqs))[1]
    c = run(backend.generate(PROMPTS[1], GenerationParams(max_tokens=12)))
    assert c.generated_tokens == 12
    assert order and all(order)


def _watch_launches(backend) -> dict:
    """Wrap `backend._step`: state["launched"] is True from a step's launch until the step returns (False between
    steps); state["steps"] counts the steps."""
    state = {"launched": False, "steps": 0}
    inner = backend._step

    def step(rows, ids, positions, sample, steps=1, launched=None):
        state["steps"] += 1

        def signal():
            state["launched"] = True
            launched()

        try:
            return inner(rows, ids, positions, sample, steps, signal)
        finally:
            state["launched"] = False

    backend._step = step
    return state


def test_finished_requests_kv_is_kept_and_freed_after_the_next_launch(make):
    """A request that ends at a step (its token limit) while another runs on: its KV goes to the prefix cache and its
    slot is freed once the next step is on the device, not between the steps where it held up the launch; and once
    the scheduler idles, nothing is left to drop."""
    backend = make(exact=False, max_batch=2)
    state = _watch_launches(backend)
    drops = []
    drop = backend._drop_store

    def drop_store(req):
        drops.append((state["steps"], state["launched"]))
        return drop(req)

    backend._drop_store = drop_store
    short, long = run(together(backend, [(PROMPTS[1], GenerationParams(max_tokens=3)),
                                         (PROMPTS[2], GenerationParams(max_tokens=12))]))
    assert (short.generated_tokens, long.generated_tokens) == (3, 12)
    assert len(drops) == 2
    # The short request's KV was handled during a later step (after its launch); the long one's when the scheduler
    # idled after the last step.
    assert drops[0][1] and drops[0][0] < state["steps"]
    assert not backend._deferred and sorted(backend._slots.free) == [0, 1]
    assert len(backend._cache.entries) >= 1


@pytest.mark.parametrize("exact", [True, False])
def test_a_request_no_later_prompt_extends_is_freed_not_kept(make, exact):
    """`keep_kv=False` (a SPRINT executor): when the request ends its KV is dropped, not copied into the prefix
    cache, and its slot is free again; the same request with the default keeps it. The text is the same either
    way, and a later prompt that extends the dropped one is still answered (its prefix computed again)."""
    backend = make(exact=exact, max_batch=2)
    params = GenerationParams(max_tokens=6, keep_kv=False)
    dropped = run(backend.generate(PROMPTS[1], params))
    assert not backend._cache.entries and not backend._deferred
    if not exact:
        assert sorted(backend._slots.free) == [0, 1]
    again = run(backend.generate(PROMPTS[1] + dropped.text, GenerationParams(max_tokens=3)))
    assert again.cached_prompt_tokens == 0
    kept = run(backend.generate(PROMPTS[2], GenerationParams(max_tokens=6)))
    assert len(backend._cache.entries) == 2   # the second and third requests' KV
    other = make(exact=exact, max_batch=2)
    assert run(other.generate(PROMPTS[1], GenerationParams(max_tokens=6))).text == dropped.text
    assert kept.generated_tokens == 6


def test_a_request_whose_kv_reaches_the_buffers_last_position_is_kept_at_once(make):
    """A CUDA-graph step writes the buffers' last position of every slot without a sequence (a dummy row): a finished
    request whose KV reaches that position is kept before the next step, not after its launch like the others."""
    backend = make(exact=False, max_batch=2)
    n = len(backend.encode_prompt(LONG))
    fill = 256 - n + 1   # its last computed position is then 255, the buffers' last (capacity 256)
    assert fill > 1
    state = _watch_launches(backend)
    drops = []
    drop = backend._drop_store

    def drop_store(req):
        drops.append((len(req.prompt_ids), req.store.length, backend._slots.keys[0].shape[2], state["launched"]))
        return drop(req)

    backend._drop_store = drop_store
    run(together(backend, [(LONG, GenerationParams(max_tokens=fill)),
                           (PROMPTS[1], GenerationParams(max_tokens=fill + 4))]))
    first = next(d for d in drops if d[0] == n)
    assert first[1] == first[2] == 256 and not first[3]   # full to the last position: kept between the steps


def test_a_request_extending_one_its_stop_string_just_ended_reuses_its_kv(make):
    """A request ended by its stop string (found while the next step runs) and a new request extending it, sent at
    once while another request keeps the scheduler busy (a SPRINT planner's next stage when the planner finished
    after its executors): the finished request's KV is kept before the new one is admitted, so it is reused."""
    full = run(make(exact=False).generate(PROMPTS[1], GenerationParams(max_tokens=12))).text
    stop = full[len(full) // 2:len(full) // 2 + 3]
    backend = make(exact=False, max_batch=4)   # its prefix cache holds nothing of PROMPTS[1]

    async def scenario():
        busy = asyncio.ensure_future(backend.generate(PROMPTS[2], GenerationParams(max_tokens=40)))
        a = await backend.generate(PROMPTS[1], GenerationParams(max_tokens=12, stop=[stop]))
        before = backend.stats.reused_prompt_tokens
        await backend.generate(PROMPTS[1] + a.text, GenerationParams(max_tokens=2))
        reused = backend.stats.reused_prompt_tokens - before
        assert a.finish_reason == "stop" and not busy.done()   # the scheduler never idled in between
        await busy
        return reused

    assert run(scenario()) >= len(backend.encode_prompt(PROMPTS[1]))


def test_max_tokens_and_eos(make):
    steps = []
    backend = make(on_logits=lambda tokens, logits: steps.append((tokens, int(logits.argmax()))))
    c = run(backend.generate(PROMPTS[1], GenerationParams(max_tokens=12)))
    assert c.generated_tokens == 12 and c.finish_reason == "length" and c.ttft_s > 0
    prompt_len = len(backend.encode_prompt(PROMPTS[1]))
    generated = steps[-1][0][prompt_len:] + [steps[-1][1]]
    assert len(generated) == 12 and backend.tokenizer.decode(generated) == c.text
    # Declare a generated token (the first one unlike those before it) an end-of-sequence token: generation ends
    # there and its text is not returned.
    k = next(i for i in range(1, 12) if generated[i] not in generated[:i])
    e = run(make(extra_eos_ids=[generated[k]]).generate(PROMPTS[1], GenerationParams(max_tokens=12)))
    assert e.finish_reason == "stop" and e.stop_string is None and e.generated_tokens == k + 1
    assert e.text == backend.tokenizer.decode(generated[:k])
    assert run(backend.generate(PROMPTS[0], GenerationParams(max_tokens=0))).text == ""


def test_stream_deltas_match_generate_and_early_close_frees_the_slot(make):
    backend = make(max_batch=1)

    async def scenario():
        whole = await backend.generate(PROMPTS[2], GenerationParams(max_tokens=16))
        st = backend.stream(PROMPTS[2], GenerationParams(max_tokens=16))
        deltas = [d async for d in st]
        st2 = backend.stream(PROMPTS[0], GenerationParams(max_tokens=200))
        async for _ in st2:
            break
        await st2.aclose()
        # With one slot, this only finishes if the abandoned stream gave its slot back.
        after = await backend.generate(PROMPTS[3], GenerationParams(max_tokens=3))
        return whole, deltas, st.completion, after

    whole, deltas, comp, after = run(scenario())
    assert "".join(deltas) == whole.text == comp.text and len(deltas) > 1
    assert after.generated_tokens == 3


def test_seeded_sampling_is_reproducible_and_batch_independent(make):
    params = [GenerationParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=s) for s in (1, 2)]
    alone = [run(make().generate(PROMPTS[0], p)).text for p in params]
    backend = make()
    both = run(together(backend, [(PROMPTS[0], p) for p in params]))
    assert [c.text for c in both] == alone
    assert alone[0] != run(make().generate(PROMPTS[0], GenerationParams(max_tokens=12))).text or alone[0] != alone[1]


def test_count_tokens_and_bad_inputs(make, tmp_path):
    backend = make()
    assert backend.count_tokens("") == 0
    assert backend.count_tokens("Let me think") == len(backend.tokenizer("Let me think",
                                                                       add_special_tokens=False)["input_ids"])
    with pytest.raises(FileNotFoundError, match="no model directory"):
        TransformersBackend(str(tmp_path / "missing"))


def test_count_tokens_past_the_context_without_the_tokenizers_warning():
    """A whole SPRINT trajectory's text (every execution at once) may be longer than the model's context: a fast
    tokenizer's Rust tokenizer counts it, not the Python wrapper (which logs a length warning for it)."""
    from sprint.models import resolve_model

    backend = TransformersBackend(str(resolve_model("countdown-sprint")), device="cpu")
    text = "<Question>\nUsing the numbers [1, 2, 3, 4], create an equation that equals 10.\n</Question>\n" * 300
    want = len(backend.tokenizer(text, add_special_tokens=False)["input_ids"])

    class NoWrapper:
        def __call__(self, *a, **k):
            raise AssertionError("the Python wrapper was called")

    backend.tokenizer = NoWrapper()
    assert backend.count_tokens(text) == want > backend.max_positions


def test_fast_mode_matches_exact_up_to_rounding(make, monkeypatch):
    """The fast path (model's own linears, slot cache, one batched attention call for the decoding rows, one masked
    call per prefill chunk) computes the same model."""
    from sprint.backends import transformers_backend

    monkeypatch.setattr(transformers_backend, "LONE_PREFILL_TOKENS", 0)   # chunked even when nothing decodes
    exact_log, fast_log = LogitLog(), LogitLog()
    params = GenerationParams(max_tokens=8)
    calls = [(LONG, params), (PROMPTS[1], params), (LONG + " Then", params)]
    run(together(make(on_logits=exact_log), calls))
    fast = make(exact=False, step_tokens=16, on_logits=fast_log)   # small steps: prompts prefill in several chunks
    run(together(fast, calls))
    shared, diff = exact_log.differences(fast_log)
    assert len(shared) >= 8
    assert diff < 1e-3


def test_fast_mode_prefills_a_lone_prompt_in_one_step_and_chunks_beside_decoding(make):
    """With nothing decoding a long prompt is one step (a chunk limit would only add eager steps); next to a decoding
    sequence it is chunked to `step_tokens`, so that sequence keeps its pace."""
    backend = make(exact=False, max_batch=2, step_tokens=16)
    n = len(backend.encode_prompt(LONG))
    assert n > 4 * 16
    run(backend.generate(LONG, GenerationParams(max_tokens=1)))
    assert backend.stats.forward_passes == 1

    async def beside_decoding():
        backend.eos_ids = set()   # the decoding sequence must outlast the other's prefill
        start = backend.stats.generated_tokens
        first = asyncio.create_task(backend.generate(PROMPTS[0], GenerationParams(max_tokens=n)))
        while backend.stats.generated_tokens < start + 2:   # it is decoding now
            await asyncio.sleep(0.005)
        passes = backend.stats.forward_passes
        await backend.generate(LONG + " So", GenerationParams(max_tokens=1))
        steps = backend.stats.forward_passes - passes
        first.cancel()
        return steps

    backend._cache = type(backend._cache)(0)   # no prefix reuse: the whole prompt is prefilled
    assert run(beside_decoding(), timeout=60) >= n // 16


def test_failures_reach_the_caller_instead_of_hanging(make):
    def explode(tokens, logits):
        raise RuntimeError("boom")

    backend = make(on_logits=explode)
    with pytest.raises(Exception, match="forward pass failed: RuntimeError: boom"):
        run(backend.generate(PROMPTS[0], GenerationParams(max_tokens=4)), timeout=10)
    backend.on_logits = None
    assert run(backend.generate(PROMPTS[0], GenerationParams(max_tokens=4))).generated_tokens == 4

    async def closed_mid_run():
        task = asyncio.create_task(backend.generate(LONG, GenerationParams(max_tokens=500)))
        await asyncio.sleep(0.05)
        await backend.aclose()
        return await task

    with pytest.raises(Exception, match="scheduler stopped"):
        run(closed_mid_run(), timeout=10)


def test_fast_batched_equals_one_at_a_time(make):
    params = GenerationParams(max_tokens=24)
    alone = [run(make(exact=False).generate(p, params)).text for p in PROMPTS]
    backend = make(exact=False)
    batched = run(together(backend, [(p, params) for p in PROMPTS]))
    assert [c.text for c in batched] == alone
    assert backend.stats.max_sequences_in_step == 4 and backend.stats.forward_passes < 4 * 24


def test_fast_prefix_reuse_and_long_sequences_match_exact(make):
    """Fast mode: KV copied from a running sequence's slot and from the prefix cache, and sequences that outgrow the
    slot buffers' first capacity (256 positions), give exact mode's logits up to rounding."""
    exact_log, fast_log = LogitLog(), LogitLog()
    fast = make(exact=False, max_batch=3, on_logits=fast_log)

    async def scenario(backend):
        planner = asyncio.create_task(backend.generate(LONG, GenerationParams(max_tokens=40)))
        await asyncio.sleep(0.05)   # the planner is decoding: executors copy its prompt KV from its slot
        ex = await together(backend, [(LONG + " Now", GenerationParams(max_tokens=6)),
                                      (LONG + " Then", GenerationParams(max_tokens=6))])
        first = await planner
        # Next stage: prompt KV from the prefix cache (the planner has finished), then a long generation.
        nxt = await backend.generate(LONG + first.text + " So", GenerationParams(max_tokens=300 - len(LONG) // 4))
        return ex, first, nxt

    ex, first, nxt = run(scenario(fast), timeout=120)
    assert all(c.cached_prompt_tokens >= fast.count_tokens(LONG) - 1 for c in ex)
    assert nxt.cached_prompt_tokens >= first.prompt_tokens
    assert nxt.prompt_tokens + nxt.generated_tokens > 256
    assert fast._slots.idle() and len(fast._active) == 0
    exact = make(on_logits=exact_log)
    for prompt, n in [(LONG, 40), (LONG + " Now", 6), (LONG + first.text + " So", nxt.generated_tokens)]:
        run(exact.generate(prompt, GenerationParams(max_tokens=n)), timeout=120)
    shared, diff = exact_log.differences(fast_log)
    assert len(shared) >= 40 + 6 + 100
    assert diff < 1e-3


def test_fast_mode_frees_slots_and_buffers(make):
    backend = make(exact=False, max_batch=2)

    async def scenario():
        out = []
        for p in PROMPTS:   # more requests than slots, one after another and then together
            out.append(await backend.generate(p, GenerationParams(max_tokens=5)))
        out += await together(backend, [(p, GenerationParams(max_tokens=5)) for p in PROMPTS])
        await asyncio.sleep(0.05)   # the scheduler idles
        return out

    out = run(scenario())
    assert [c.generated_tokens for c in out] == [5] * 8
    assert sorted(backend._slots.free) == [0, 1] and backend._slots.keys == {} and backend._slots.values == {}


def test_fast_decode_step_work_does_not_grow_with_the_context(make):
    """Per decode step the fast mode touches the context only inside the attention call: no KV buffer is reallocated
    (the prompt's capacity holds the whole generation here), the batched call at batch 1 reads exactly the sequence's
    keys with no mask, and detokenizing decodes a few tokens, never the growing text. Counted, not timed."""
    from sprint.backends import transformers_backend as tb

    backend = make(exact=False, max_batch=2)
    backend.eos_ids = set()
    prompt = LONG * 2   # ~320 tokens: capacity 512 from the prefill on, enough for 40 more
    plans, decoded, allocs = [], [], []
    slot_rows, decode, ensure = backend._slot_rows, backend._decode_ids, tb.SlotCache.ensure

    def counting_ensure(self, layer, like_k, like_v, needed, slots=1):
        before = self.keys.get(layer)
        ensure(self, layer, like_k, like_v, needed, slots)
        if self.keys.get(layer) is not before:
            allocs.append(len(plans))   # the step that allocated

    backend._slot_rows = lambda rows, positions: plans.append(slot_rows(rows, positions)) or plans[-1]
    backend._decode_ids = lambda ids: decoded.append(len(ids)) or decode(ids)
    tb.SlotCache.ensure = counting_ensure
    try:
        out = run(backend.generate(prompt, GenerationParams(max_tokens=40)))
    finally:
        tb.SlotCache.ensure = ensure
    assert out.generated_tokens == 40 and out.prompt_tokens + 40 < 512
    decode_steps = [i for i, p in enumerate(plans, 1) if not p.chunks]
    assert len(decode_steps) == 39
    assert allocs and not set(allocs) & set(decode_steps)   # buffers made by the prefill, never by a decode step
    for i in decode_steps:
        p = plans[i - 1]
        assert p.span == 1 and p.full and p.single_mask(None) is None and p.max_len == p.capacity
    assert max(decoded) <= 8   # the last prompt tokens plus the new ones, never the growing text


def test_fast_mode_buffers_hold_only_the_slots_in_use(make):
    """The KV buffers grow in slot rows as sequences arrive (not max_batch rows up front): a run with few sequences
    does not zero-fill memory for all the slots it could have; outputs are the same as with the rows given up front."""
    from sprint.backends import transformers_backend as tb

    backend = make(exact=False, max_batch=64)
    prompts = [f"{LONG} {i}" for i in range(3)]

    async def scenario():
        return await asyncio.gather(*(backend.generate(p, GenerationParams(max_tokens=6)) for p in prompts))

    rows_seen = []
    ensure = tb.SlotCache.ensure

    def spy(self, layer, like_k, like_v, needed, slots=1):
        ensure(self, layer, like_k, like_v, needed, slots)
        rows_seen.append(self.keys[layer].shape[0])

    tb.SlotCache.ensure = spy
    try:
        out = run(scenario())
    finally:
        tb.SlotCache.ensure = ensure
    assert rows_seen and max(rows_seen) == 8   # 3 sequences: one block of 8 rows, not 64
    wide = make(exact=False, max_batch=64)
    tb.SlotCache.ensure = lambda self, layer, k, v, needed, slots=1: ensure(self, layer, k, v, needed, 64)
    try:
        ref = run(together(wide, [(p, GenerationParams(max_tokens=6)) for p in prompts]))
    finally:
        tb.SlotCache.ensure = ensure
    assert [c.text for c in out] == [c.text for c in ref]


def test_slot_cache_names_each_slots_prefix_source_through_copies_and_releases():
    """`SlotCache.shares`: a slot whose first n positions were copied from a running slot may read them there (the
    split decode attention does); copies of copies point at the first source while they lie inside what it shares;
    when a source is released, the slot holding the longest copy becomes the others' source; a reused or refilled
    slot shares nothing."""
    import torch

    from sprint.backends import transformers_backend as tb

    cache = tb.SlotCache(8)
    cache.ensure(0, torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4), 64, 8)
    cache.keys[0][0, 0, :64, 0] = torch.arange(64.0)   # the planner's keys, position numbers
    planner = cache.acquire()
    planner.length = 50
    e1, e2, e3, e4 = (cache.acquire() for _ in range(4))
    cache.copy_prefix(planner, e1, 20)
    cache.copy_prefix(planner, e2, 30)
    cache.copy_prefix(e2, e3, 25)       # inside what e2 shares with the planner: the planner is the source
    e2.length = 40
    cache.copy_prefix(e2, e4, 35)       # past it: e2 is
    assert [cache.shares(s.slot) for s in (planner, e1, e2, e3, e4)] == [(0, 0), (0, 20), (0, 30), (0, 25), (2, 35)]
    assert torch.equal(cache.keys[0][e3.slot, 0, :25, 0], torch.arange(25.0))   # the copies are made all the same
    cache.release(planner)   # the planner ends first: e2 holds the longest copy of its positions
    assert [cache.shares(s.slot) for s in (e1, e2, e3, e4)] == [(2, 20), (2, 0), (2, 25), (2, 35)]
    cache.release(e2)        # then e4 (35 positions of e2's; e1 and e3 agree with it up to their own lengths)
    assert [cache.shares(s.slot) for s in (e1, e3, e4)] == [(4, 20), (4, 25), (4, 0)]
    again = cache.acquire()  # slot 0 again: a new sequence, nothing shared
    assert again.slot == 0 and cache.shares(0) == (0, 0)
    store = tb.KVStore()
    store.write(0, 0, torch.zeros(1, 10, 4), torch.zeros(1, 10, 4))
    store.length = 10
    cache.copy_prefix(store, e1, 10)   # refilled from a finished sequence's store: its own keys only
    assert cache.shares(e1.slot) == (e1.slot, 0)


def test_stacked_slot_buffers_copy_and_export_as_the_per_layer_ones_do():
    """`SlotCache(layers=3)`: every layer's buffers are views of one stack, allocated at the first layer's write and
    grown with their contents kept; a prefix copied between slots, exported and copied back from the store comes out
    as with per-layer buffers (`layers=None`); a layer of another shape leaves the stack, and copies go layer by
    layer from then on."""
    import torch

    from sprint.backends import transformers_backend as tb

    def filled(layers):
        cache = tb.SlotCache(8, layers=layers)
        g = torch.Generator().manual_seed(3)
        for layer in range(3):
            cache.ensure(layer, torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4), 16, 2)
            cache.keys[layer][0, :, :16] = torch.randn(2, 16, 4, generator=g)
            cache.values[layer][0, :, :16] = torch.randn(2, 16, 4, generator=g)
        return cache

    stacked, plain = filled(3), filled(None)
    assert stacked.stack is not None and plain.stack is None
    assert all(stacked.keys[layer]._base is stacked.stack[0] for layer in range(3))
    stores = []
    for cache in (stacked, plain):
        first, second, third = cache.acquire(), cache.acquire(), cache.acquire()
        first.length = 16
        cache.copy_prefix(first, second, 12)
        cache.ensure(0, cache.keys[0], cache.values[0], 100, 9)   # grows every layer (stacked: the stack)
        stores.append(cache.export(second))
        cache.copy_prefix(stores[-1], third, 12)
    store = stores[0]
    assert stacked.stack[0].shape[3] >= 100 and stacked.keys[2].shape[0] == 8
    assert store.stacked is not None and stores[1].stacked is None
    for layer in range(3):
        for d in ("keys", "values"):
            a, b = getattr(stacked, d)[layer], getattr(plain, d)[layer]
            assert torch.equal(a[:3, :, :16], b[:3, :, :16])
            assert torch.equal(a[2, :, :12], a[0, :, :12]) and not a[2, :, 12:].any()
    fourth = stacked.acquire()
    stacked.copy_prefix(store, fourth, 12)
    assert torch.equal(stacked.keys[1][fourth.slot, :, :12], stacked.keys[1][0, :, :12])
    # A model whose last layer has other keys (3 heads): it gets buffers of its own at its first write.
    odd = tb.SlotCache(8, layers=3)
    for layer, heads in ((0, 2), (1, 2), (2, 3)):
        odd.ensure(layer, torch.zeros(1, heads, 1, 4), torch.zeros(1, heads, 1, 4), 16, 2)
    assert odd.stack is None and [odd.keys[layer].shape[1] for layer in range(3)] == [2, 2, 3]
    odd.keys[2][0, :, :5] = 1.0
    one, two = odd.acquire(), odd.acquire()
    one.length = 5
    odd.copy_prefix(one, two, 5)   # layer by layer
    assert odd.keys[2][two.slot, :, :5].eq(1.0).all()


class StepCounter:
    """Counts, per forward pass of a backend, the aten ops, the tensors built from host data (`torch.tensor(list)`:
    one host-to-device copy each on a GPU) with their sizes, and the reads of device values by the host (`.item()`,
    `.tolist()`, `bool(t)`, ...: each one a synchronisation on a GPU). Works on the CPU: the counts are what a GPU
    would copy and wait for."""

    READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero")

    def __init__(self, backend):
        import threading

        self.backend, self.inner, self.steps = backend, backend._step, []
        self.local = threading.local()

    def __enter__(self):
        import collections

        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Ops(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                c = counter.local.c
                c["ops"] += 1
                if func.overloadpacket.__name__ == "lift_fresh":
                    c["host_built"] += 1
                    c["host_built_numel"] += out.numel()
                elif func.overloadpacket.__name__ in ("_local_scalar_dense", "nonzero"):
                    c["read:" + func.overloadpacket.__name__] += 1
                return out

        self.saved = {}
        for name in self.READS:
            self.saved[name] = torch.Tensor.__dict__.get(name)
            original = getattr(torch.Tensor, name)

            def read(t, *a, _original=original, _name=name, **kw):
                c = getattr(counter.local, "c", None)
                if c is not None:
                    c["read:" + _name] += 1
                return _original(t, *a, **kw)

            setattr(torch.Tensor, name, read)

        def step(rows, ids, positions, sample, *steps):
            self.local.c = collections.Counter()
            try:
                with Ops():
                    return self.inner(rows, ids, positions, sample, *steps)
            finally:
                kinds = {"decode" if e - s == 1 else "prefill" for s, e, _, _ in rows.segments}
                self.steps.append((len(rows.segments), "+".join(sorted(kinds)), max(p for p in positions) + 1,
                                   self.local.c))
                self.local.c = None

        self.backend._step = step
        return self

    def __exit__(self, *exc):
        import torch

        del self.backend._step
        for name, attr in self.saved.items():
            if attr is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, attr)

    def decode_steps(self, sequences: int):
        return [(ctx, c) for n, kind, ctx, c in self.steps if kind == "decode" and n == sequences]


def test_fast_decode_step_host_traffic_does_not_grow_with_the_context(make):
    """A decode step's host<->device traffic is one copy of a few indices per sequence in and one read of the picked
    tokens out, at a 6-token context as at a 1,000-token one; and it runs the same ops (the context only lengthens the
    attention call's keys). On a GPU every host-built tensor is a copy and every host read a synchronisation.
    (Before: five host-built tensors per step, four of them blocking copies, and 777 ops instead of 704 on the
    bundled model.)"""
    backend = make(exact=False, max_batch=2)
    backend.eos_ids = set()
    long_prompt = LONG * 6
    assert 900 < len(backend.encode_prompt(long_prompt)) < 1100
    with StepCounter(backend) as counter:
        for prompt in (PROMPTS[0], long_prompt):
            run(backend.generate(prompt, GenerationParams(max_tokens=12)), timeout=60)
        # Two sequences of different lengths decoding together: the masked batched call.
        run(together(backend, [(long_prompt + " Then", GenerationParams(max_tokens=8)),
                               (PROMPTS[1], GenerationParams(max_tokens=8))]), timeout=60)
    alone = counter.decode_steps(1)
    contexts = [ctx for ctx, _ in alone]
    assert min(contexts) < 20 and max(contexts) > 900 and len(alone) >= 22
    for ctx, c in alone:
        # ids, positions, kept row, KV write slot, decoding row, its slot, its key length: 7 integers, one copy.
        assert c["host_built"] == 1 and c["host_built_numel"] == 7, (ctx, c)
        assert {k: v for k, v in c.items() if k.startswith("read:")} == {"read:tolist": 1}, (ctx, c)
    assert len({c["ops"] for _, c in alone}) == 1, [(ctx, c["ops"]) for ctx, c in alone]   # same ops at any length
    pairs = counter.decode_steps(2)
    assert len(pairs) >= 5
    for ctx, c in pairs:
        assert c["host_built"] == 1 and c["host_built_numel"] <= 2 * 7, (ctx, c)
        assert {k: v for k, v in c.items() if k.startswith("read:")} == {"read:tolist": 1}, (ctx, c)
    assert len({c["ops"] for _, c in pairs}) == 1


def _with_padded_decode(backend):
    """The CUDA-graph step's layout run eagerly (a CPU has no CUDA graphs): every decode-only step padded to a bucket
    of rows laid out by slot, attending over a bucket of keys (at most the buffer capacity) with a key-length mask."""
    from sprint.backends.decode_graphs import DecodeGraphs

    backend._graphs = DecodeGraphs(backend, capture=False)
    return backend


def _step_kinds(backend) -> list:
    """What each of the backend's graph steps ran as from now on (`DecodeGraphs.last_kind`; None: eagerly)."""
    kinds, graphs = [], backend._graphs
    step = graphs.step
    graphs.step = lambda *a: (step(*a), kinds.append(graphs.last_kind))[0]
    return kinds


@pytest.mark.parametrize("key_splits", [1, 2])
def test_padded_decode_steps_match_the_fast_mode(make, monkeypatch, key_splits):
    """The decode step CUDA graphs capture (rows by slot, dummy rows for free slots, a bucket of keys masked by key
    length) computes what the fast mode computes: the same logits to rounding and the same greedy text, with
    sequences joining, finishing and leaving holes in the slots, prefix reuse, a capacity change (256 -> 512), and
    short sequences attending over fewer keys than the grown capacity holds; also with key buckets between the
    doublings (`KEY_BUCKET_SPLITS` 2: 384, ...)."""
    from sprint.backends import decode_graphs

    monkeypatch.setattr(decode_graphs, "KEY_BUCKET_SPLITS", key_splits)
    base_log, padded_log = LogitLog(), LogitLog()
    base = make(exact=False, max_batch=5, on_logits=base_log)
    padded = _with_padded_decode(make(exact=False, max_batch=5, on_logits=padded_log))

    async def scenario(backend):
        long_run = asyncio.create_task(backend.generate(LONG, GenerationParams(max_tokens=120)))
        await asyncio.sleep(0.05)
        short = await together(backend, [(p, GenerationParams(max_tokens=n)) for p, n in
                                         zip(PROMPTS, (3, 9, 5, 14))])   # finish at different steps: slot holes
        again = await together(backend, [(LONG + " Then", GenerationParams(max_tokens=7)),
                                         (PROMPTS[0], GenerationParams(max_tokens=6))])
        first = await long_run
        alone = await backend.generate(PROMPTS[1], GenerationParams(max_tokens=5))   # short, in grown buffers
        return [first, *short, *again, alone]

    want = run(scenario(base), timeout=120)
    got = run(scenario(padded), timeout=120)
    assert [c.text for c in got] == [c.text for c in want]
    assert want[0].prompt_tokens + want[0].generated_tokens > 256   # the buffers outgrew their first capacity
    g = padded._graphs
    assert padded.stats.graph_steps > 100 and g.captures >= 3   # several buckets and capacities
    assert padded.stats.forward_passes > padded.stats.graph_steps   # prefill steps ran eagerly
    # (B, Q, capacity, K, S): the short requests after the long one attend over 256 keys of the 512-position buffers.
    # (With key buckets between doublings the long sequence's ~280 keys take the 384 bucket instead of 512.)
    assert {(cap, k) for _, _, cap, k, _ in g.graphs} >= {(512, 256), (512, 512 if key_splits == 1 else 384)}
    shared, diff = base_log.differences(padded_log)
    assert len(shared) == len(base_log.seen) == len(padded_log.seen)
    assert diff < 1e-4
    # Idle: the buffers the graphs are bound to stay; every slot is free again.
    assert sorted(padded._slots.free) == list(range(5)) and padded._slots.keys


def test_graphs_survive_the_idle_moment_between_stages(make):
    """With graphs the slot buffers stay when the backend idles (as between two SPRINT stages), so the next
    request of the same shape replays the graph built for the first instead of building another."""
    backend = _with_padded_decode(make(exact=False))

    async def two_stages():
        first = await backend.generate(PROMPTS[0], GenerationParams(max_tokens=8))
        await asyncio.sleep(0.05)   # the scheduler idles
        return first, await backend.generate(PROMPTS[1], GenerationParams(max_tokens=8))

    run(two_stages())
    g = backend._graphs
    # One decode graph, replayed by both requests (the second prompt's short prefill has a multi-row graph of its own).
    assert g.captures == len(g.graphs) and all(k[0] == 1 for k in g.graphs)   # nothing captured twice
    assert sum(k[1] == 1 for k in g.graphs) == 1 and backend.stats.graph_steps >= 14
    assert backend._slots.keys   # kept through the idle moment


def test_short_prefills_run_in_multi_row_graph_steps_with_the_fast_modes_results(make):
    """An executor-like request (a running sequence's context plus a few new tokens: its prefix is reused, so only
    those are prefilled) joins while others decode; the step takes it as Q rows of its slot (padded by repeating its
    last token) instead of running eagerly, with the fast mode's logits and text."""
    from sprint.backends import decode_graphs

    base_log, padded_log = LogitLog(), LogitLog()
    base = make(exact=False, max_batch=4, on_logits=base_log)
    padded = _with_padded_decode(make(exact=False, max_batch=4, on_logits=padded_log))
    steps = []
    original = padded._graphs.step
    padded._graphs.step = lambda rows, *a: steps.append(max(e - s for s, e, _, _ in rows.segments)) or original(
        rows, *a)

    async def scenario(backend):
        planner = asyncio.create_task(backend.generate(LONG, GenerationParams(max_tokens=60)))
        await asyncio.sleep(0.3)
        # Executors: the planner's prompt plus a short "prompt" each, arriving one after another.
        execs = []
        for i, tail in enumerate([" Then", " So we", " Next, the"]):
            execs.append(asyncio.create_task(backend.generate(LONG + tail, GenerationParams(max_tokens=10 + i))))
            await asyncio.sleep(0.05)
        return [await planner, *[await e for e in execs]]

    want = run(scenario(base), timeout=120)
    got = run(scenario(padded), timeout=120)
    assert [c.text for c in got] == [c.text for c in want]
    multi = [k for k in padded._graphs.graphs if k[1] > 1]
    assert multi and all(k[1] in decode_graphs.QUERY_BUCKETS for k in multi)
    assert any(1 < n <= 8 for n in steps)   # short prefills reached the graph step
    assert padded.stats.reused_prompt_tokens > 0
    shared, diff = base_log.differences(padded_log)
    assert len(shared) == len(base_log.seen) == len(padded_log.seen)
    assert diff < 1e-4


@pytest.mark.parametrize("max_rows, split", [(None, True), (8, True), (None, False)])
def test_prefills_among_decoding_rows_run_as_split_graph_steps_with_the_fast_modes_results(make, monkeypatch,
                                                                                          max_rows, split):
    """A prefill that no single graph takes next to decoding rows (a prompt past the query buckets; with
    MAX_GRAPH_ROWS 8, any prompt among 4 slots) runs as graph replays, the decoding rows in one and each prefill in
    a one-slot graph of its own slot, not eagerly: the fast mode's logits and text, with sampling rows among them.
    `SPLIT_STEPS` off: those steps run eagerly, as before split steps (the A/B switch)."""
    from sprint.backends import decode_graphs

    monkeypatch.setattr(decode_graphs, "SPLIT_STEPS", split)
    if max_rows:
        monkeypatch.setattr(decode_graphs, "MAX_GRAPH_ROWS", max_rows)
    base_log, padded_log = LogitLog(), LogitLog()
    base = make(exact=False, max_batch=4, on_logits=base_log)
    padded = _with_padded_decode(make(exact=False, max_batch=4, on_logits=padded_log))
    kinds = _step_kinds(padded)

    async def scenario(backend):
        backend.eos_ids = set()   # every request runs to its token limit: the first two decode all along
        first = asyncio.create_task(backend.generate(PROMPTS[0], GenerationParams(max_tokens=400)))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(backend.generate(PROMPTS[1], GenerationParams(
            max_tokens=300, temperature=0.7, seed=3)))
        await asyncio.sleep(0.05)
        # A long new prompt (no cached prefix) while both decode, then two that extend it by a few tokens.
        long = asyncio.create_task(backend.generate(LONG, GenerationParams(max_tokens=30)))
        await asyncio.sleep(0.05)
        tails = [asyncio.create_task(backend.generate(LONG + t, GenerationParams(max_tokens=6))) for t in
                 (" Then", " So we")]
        return [await first, await second, await long, *[await t for t in tails]]

    want = run(scenario(base), timeout=120)
    got = run(scenario(padded), timeout=120)
    assert [c.text for c in got] == [c.text for c in want]
    splits = [k for k in kinds if k and k.startswith("split")]
    if not split:
        assert not splits and kinds.count(None) > 1
    else:
        assert splits, kinds
        assert kinds.count(None) == 1 and kinds[0] is None   # eager: only the first step (it builds the buffers)
    if max_rows:   # every prompt after the first ran split, each prefill in a one-slot graph
        assert not [k for k in kinds if k and k.startswith("join")]
    shared, diff = base_log.differences(padded_log)
    assert len(shared) == len(base_log.seen) == len(padded_log.seen)
    assert diff < 1e-4


def test_split_blocks_give_the_fast_modes_text_and_counts(make, monkeypatch):
    """`SPLIT_BLOCKS`: in a split step the decoding rows take a block of decode steps while a joining prefill takes
    one (the graph layout run eagerly on the CPU, MAX_GRAPH_ROWS 8 so that every prompt among running requests is
    split): the same text and token counts as the fast mode, with token limits and a stop string inside blocks."""
    from sprint.backends import decode_graphs
    from sprint.backends import transformers_backend as tb

    monkeypatch.setattr(decode_graphs, "MAX_GRAPH_ROWS", 8)
    monkeypatch.setattr(tb, "SPLIT_BLOCKS", True)

    async def scenario(backend):
        backend.eos_ids = set()
        first = asyncio.create_task(backend.generate(PROMPTS[0], GenerationParams(max_tokens=200)))
        await asyncio.sleep(0.05)
        later = []
        for prompt, n in [(PROMPTS[1], 37), (LONG, 23), (LONG + " Then", 11), (PROMPTS[2], 29)]:
            later.append(asyncio.create_task(backend.generate(prompt, GenerationParams(max_tokens=n))))
            await asyncio.sleep(0.03)
        probe = await later[0]
        stop = probe.text[len(probe.text) // 2:][:5]
        again = await backend.generate(PROMPTS[1], GenerationParams(max_tokens=37, stop=[stop]))
        return [await first, probe, *[await t for t in later[1:]], again]

    want = run(scenario(make(exact=False, max_batch=4)), timeout=120)
    blocks = _with_padded_decode(make(exact=False, max_batch=4))
    blocks.decode_steps = 4
    kinds = _step_kinds(blocks)
    got = run(scenario(blocks), timeout=120)
    assert [(c.text, c.generated_tokens, c.finish_reason) for c in got] == [
        (c.text, c.generated_tokens, c.finish_reason) for c in want]
    assert got[-1].finish_reason == "stop"
    assert any(k and k.startswith("split") and k.endswith("x4") for k in kinds), kinds


@pytest.mark.parametrize("decode_steps, split_blocks", [(1, False), (4, False), (4, True)])
def test_bundled_sprint_solve_through_padded_graph_steps_matches_the_fast_mode(decode_steps, split_blocks,
                                                                              monkeypatch):
    """A whole SPRINT solve of the bundled Countdown model through the CUDA-graph step layout (run eagerly on the
    CPU) gives the fast mode's trajectory with one eager step, the run's first (26 of 4 stages before the multi-row
    steps took the executors' prompts, one per stage before the planner's reads went through long-prefill graphs).
    `split_blocks`: every executor's join a split step (MAX_GRAPH_ROWS 8) whose decoding rows take a block
    (`SPLIT_BLOCKS`)."""
    from sprint.backends import decode_graphs
    from sprint.backends import transformers_backend as tb

    if split_blocks:
        monkeypatch.setattr(decode_graphs, "MAX_GRAPH_ROWS", 8)
        monkeypatch.setattr(tb, "SPLIT_BLOCKS", True)
    from sprint.inference.orchestrator import SprintConfig, solve
    from sprint.models import default_settings, resolve_model
    from sprint.tasks.countdown.loader import load_countdown

    path = resolve_model("countdown-sprint")
    item = load_countdown("test", 2, 1, question_order="sorted")[1]
    config = SprintConfig(**default_settings("countdown-sprint", "sprint"))
    results = []
    for padded in (False, True):
        backend = TransformersBackend(path, device="cpu", exact=False, max_batch=8)
        if padded:
            _with_padded_decode(backend).decode_steps = decode_steps
            kinds = _step_kinds(backend)
        results.append(run(solve(item.question, backend, config, backend.tokenizer), timeout=300))
    base, got = results
    assert any(k and k.startswith("split") and k.endswith("x4") for k in kinds) == split_blocks
    assert got.trajectory == base.trajectory and got.stages == base.stages >= 2
    assert [k for k in backend._graphs.graphs if k[1] > 1]
    # Eager: only the question's prefill, the run's first step (it builds the KV buffers); the planner reads each
    # stage's executions alone, through a long-prefill graph (B = 1).
    # (Counted per step: the solve may return while its last step runs, before the backend's own counters see it.)
    assert kinds.count(None) == 1 and kinds[0] is None and len(kinds) > (300 if decode_steps == 1 else 60)
    assert [k for k in backend._graphs.graphs if k[0] == 1 and k[1] > decode_graphs.QUERY_BUCKETS[-1]]
    assert any(k[4] == decode_steps for k in backend._graphs.graphs)


def test_multi_step_blocks_give_the_fast_modes_text_and_counts(make):
    """Greedy decode steps taken `decode_steps` at a time (the graph layout run eagerly on the CPU) give what a step
    at a time gives: the same text and token counts with stop strings and EOS falling inside a block, token limits
    that are not a multiple of the block, requests joining mid-run, and prefix reuse of what blocks computed."""
    def scenario(backend):
        async def go():
            long_run = asyncio.create_task(backend.generate(LONG, GenerationParams(max_tokens=41)))
            await asyncio.sleep(0.05)
            rest = await together(backend, [(PROMPTS[0], GenerationParams(max_tokens=13)),
                                            (PROMPTS[1], GenerationParams(max_tokens=7))])
            first = await long_run
            # The same prompt alone twice (its KV from the prefix cache, so the same text): the second time until a
            # piece of the first's text, a stop string that most likely ends it inside a block.
            probe = await backend.generate(LONG, GenerationParams(max_tokens=40))
            stop = probe.text[len(probe.text) // 3: len(probe.text) // 3 + 6]
            stopped = await backend.generate(LONG, GenerationParams(max_tokens=40, stop=[stop]))
            again = await backend.generate(LONG, GenerationParams(max_tokens=30))   # prefix from earlier blocks
            return [stopped, probe, first, *rest, again]
        first = run(go(), timeout=120)
        # An EOS token inside a block: one the same request writes (its ids re-read from its text) when EOS is off.
        text = run(backend.generate(LONG + " So", GenerationParams(max_tokens=40)), timeout=60).text
        backend.eos_ids = {backend.tokenizer(text, add_special_tokens=False)["input_ids"][10]}
        ended = run(backend.generate(LONG + " So", GenerationParams(max_tokens=40)), timeout=60)
        backend.eos_ids = set()
        return [*first, ended]

    want = scenario(make(exact=False, max_batch=4))
    blocks = _with_padded_decode(make(exact=False, max_batch=4))
    blocks.decode_steps = 4
    blocks.eos_ids = set()
    got = scenario(blocks)
    assert [(c.text, c.generated_tokens, c.finish_reason, c.stop_string) for c in got] == [
        (c.text, c.generated_tokens, c.finish_reason, c.stop_string) for c in want]
    assert got[0].finish_reason == "stop" and got[0].stop_string == got[1].text[len(got[1].text) // 3:][:6]
    assert got[-1].finish_reason == "stop" and got[-1].generated_tokens < 40   # its EOS
    assert any(k[4] == 4 for k in blocks._graphs.graphs)                       # blocks really ran
    assert blocks.stats.graph_steps < 0.6 * sum(c.generated_tokens for c in got)


def test_warmup_captures_every_graph_a_run_uses_before_it_runs(make):
    """`warmup(n)` sizes the buffers for the model's positions and captures each row bucket up to n, key bucket and
    kind of step; runs of up to n sequences afterwards capture nothing and give the fast mode's text."""
    from sprint.backends import decode_graphs

    want = run(together(make(exact=False, max_batch=8), [(p, GenerationParams(max_tokens=20)) for p in PROMPTS]),
               timeout=120)
    backend = _with_padded_decode(make(exact=False, max_batch=8))
    backend.decode_steps = 4
    assert run(make(exact=False).warmup(4)) == {}   # no graphs: nothing to do
    g = backend._graphs
    marks = {}

    async def warm_then_run():   # one event loop, as in `sprint eval` (a new loop starts the backend afresh)
        done = await backend.warmup(3)
        marks.update(captured=g.captures, keys=set(g.graphs))
        return done, await together(backend, [(p, GenerationParams(max_tokens=20)) for p in PROMPTS[:3]])

    done, got = run(warm_then_run(), timeout=300)
    assert done["graphs"] == len(marks["keys"]) > 0 and done["sequences"] == 3
    assert backend._slots.keys[0].shape[2] >= backend.max_positions and backend._slots.keys[0].shape[0] >= 4
    assert {k[0] for k in marks["keys"]} == {1, 2, 4} and {k[4] for k in marks["keys"]} == {1, 4}
    assert {k[3] for k in marks["keys"]} == set(decode_graphs.key_buckets(backend._slots.keys[0].shape[2]))
    assert g.captures == marks["captured"], set(g.graphs) - marks["keys"]   # nothing captured mid-run
    assert [c.text for c in got] == [c.text for c in want[:3]]


def test_multi_step_blocks_only_for_greedy_decode_steps_with_room(make):
    """A block is taken only when every row decodes greedily with `decode_steps` positions of room in the context,
    no observer needs each step's logits and no request waits; otherwise one step. A token limit inside a block does
    not stop it: the tokens past the limit are dropped."""
    backend = _with_padded_decode(make(exact=False, max_batch=4))
    backend.decode_steps = 4
    backend.eos_ids = set()
    seen = []
    original = backend._graphs.step
    backend._graphs.step = lambda rows, ids, pos, sample, steps=1, *more: seen.append(steps) or original(
        rows, ids, pos, sample, steps, *more)
    done = run(backend.generate(PROMPTS[0], GenerationParams(max_tokens=10)))
    # 10 = the prefill's pick + 2 blocks of 4 + a third block, of which one token is kept.
    assert seen == [1, 4, 4, 4] and done.generated_tokens == 10 and done.finish_reason == "length"
    seen.clear()
    context = backend.max_positions
    backend.max_positions = len(backend.encode_prompt(PROMPTS[1])) + 7   # room for one block after the prefill
    done = run(backend.generate(PROMPTS[1], GenerationParams(max_tokens=20)))
    assert seen[:2] == [1, 4] and set(seen[2:]) == {1} and done.generated_tokens == 7
    backend.max_positions = context
    seen.clear()
    run(backend.generate(PROMPTS[1], GenerationParams(max_tokens=10, temperature=0.8, seed=1)))
    assert seen and set(seen) == {1}
    with pytest.raises(ValueError, match="decode_steps"):
        make(exact=False, decode_steps=0)


def test_full_batch_blocks_give_the_same_text_while_requests_wait(make, monkeypatch):
    """`FULL_BATCH_BLOCKS`: with more requests than slots, blocks are taken while the others wait for a full batch
    (off: one step at a time then), and every request gets the text it gets one step at a time."""
    from sprint.backends import transformers_backend as tb

    calls = [(p, GenerationParams(max_tokens=n)) for p, n in zip(PROMPTS + [LONG], (11, 17, 9, 14, 12))]
    want = run(together(make(exact=False, max_batch=2), calls), timeout=120)
    seen = {}
    for on in (False, True):
        monkeypatch.setattr(tb, "FULL_BATCH_BLOCKS", on)
        backend = _with_padded_decode(make(exact=False, max_batch=2))
        backend.decode_steps = 4
        waiting = seen[on] = []
        original = backend._graphs.step
        backend._graphs.step = lambda rows, ids, pos, sample, steps=1, *more, b=backend, w=waiting, o=original: (
            w.append((steps, len(b._pending))) or o(rows, ids, pos, sample, steps, *more))
        got = run(together(backend, calls), timeout=120)
        assert [(c.text, c.generated_tokens) for c in got] == [(c.text, c.generated_tokens) for c in want]
    assert not any(steps > 1 and pending for steps, pending in seen[False])   # off: one step while any waits
    assert any(steps == 4 and pending for steps, pending in seen[True])       # on: blocks while they wait


def test_prefill_rows_per_step_default_follows_the_module_setting(make, monkeypatch):
    from sprint.backends import transformers_backend as tb

    assert make(exact=False, max_batch=4).step_tokens == 4 + tb.PREFILL_TOKENS_PER_STEP
    monkeypatch.setattr(tb, "PREFILL_TOKENS_PER_STEP", 2048)
    assert make(exact=False, max_batch=4).step_tokens == 4 + 2048
    assert make(exact=False, max_batch=4, step_tokens=100).step_tokens == 100   # given: as given
    assert make(exact=True).step_tokens == 64


@pytest.mark.parametrize("slots, queries", [(2, 1), (2, 8), (1, 8), (1, 128)])
def test_the_captured_forward_never_waits_on_the_device(make, slots, queries):
    """What a CUDA graph captures must not read device values back (`.item()`, data-dependent sizes such as
    `nonzero` or `repeat_interleave` with tensor repeats) nor build tensors from host data: either fails or freezes a
    capture. Checked on the CPU by dispatching the padded forward pass through a recorder (one slot with several rows:
    the graph that serves any slot's prefill, its slot an input)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    padded = _with_padded_decode(make(exact=False, max_batch=4))
    run(padded.generate(PROMPTS[0], GenerationParams(max_tokens=3)))   # builds the buffers
    graphs = padded._graphs
    g = graphs._build(slots, padded._slots.keys[0].shape[2], queries)
    seen = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Recorder():
        graphs._forward(g)
    forbidden = {"_local_scalar_dense", "nonzero", "repeat_interleave", "masked_select", "unique", "lift_fresh",
                 "_unique2"}
    assert seen and not forbidden & set(seen), sorted(forbidden & set(seen))
    assert ("index_select" in seen) == (slots == 1 and queries > 1)


def test_a_runs_first_step_and_prefills_past_every_bucket_stay_eager(make, monkeypatch):
    """With graphs, eager steps are a run's first (it builds the KV buffers) and a prefill longer than every bucket
    (the long buckets cut to 128 rows here); a one-slot prefill whose query bucket has more rows than MAX_GRAPH_ROWS
    takes the smallest bucket that fits (a long one), all in one run."""
    from sprint.backends import decode_graphs

    padded = _with_padded_decode(make(exact=False, max_batch=4))
    kinds = _step_kinds(padded)
    monkeypatch.setattr(decode_graphs, "LONG_QUERY_BUCKETS", (128,))
    assert len(padded.encode_prompt(LONG)) > 128 and len(padded.encode_prompt(PROMPTS[1])) > 8

    async def go():
        await padded.generate(PROMPTS[0], GenerationParams(max_tokens=4))
        await padded.generate(LONG, GenerationParams(max_tokens=3))
        monkeypatch.setattr(decode_graphs, "MAX_GRAPH_ROWS", 4)   # Q = 32 (or 64) x 1 slot no longer fits
        await padded.generate(PROMPTS[1], GenerationParams(max_tokens=3))

    run(go())
    prefills = [k for k in kinds if k is None or not k.startswith("decode")]
    assert prefills == [None, None, "long prefill"], kinds
    assert len(kinds) > 6   # the decode steps between them ran in graphs


def test_padded_decode_samples_and_picks_by_slot(make):
    """Seeded sampling through the padded step gives what the fast mode gives (the sampling rows' logits are read by
    slot), alone and next to a greedy request."""
    params = GenerationParams(max_tokens=12, temperature=0.8, top_p=0.9, seed=11)
    calls = [(PROMPTS[1], params), (PROMPTS[2], GenerationParams(max_tokens=12))]
    want = [c.text for c in run(together(make(exact=False), calls))]
    padded = _with_padded_decode(make(exact=False))
    assert [c.text for c in run(together(padded, calls))] == want
    assert padded.stats.graph_steps > 0


def test_cuda_graphs_need_the_fast_mode_on_cuda(make):
    with pytest.raises(ValueError, match="cuda_graphs: needs the fast mode on a CUDA device"):
        make(exact=False, cuda_graphs=True)


def test_graph_buckets():
    from sprint.backends.decode_graphs import buckets, fit

    assert buckets(1) == [1] and buckets(8) == [1, 2, 4, 8] and buckets(6) == [1, 2, 4, 6]
    assert buckets(128)[-2:] == [64, 128]
    assert fit(buckets(6), 3) == 4 and fit(buckets(6), 6) == 6 and fit(buckets(6), 7) is None


def test_a_failed_capture_falls_back_to_eager_decoding(make, caplog):
    """A model whose forward pass cannot be captured decodes eagerly after one warning, with the same text."""
    want = run(make(exact=False).generate(PROMPTS[1], GenerationParams(max_tokens=10))).text
    backend = _with_padded_decode(make(exact=False))

    def cannot_capture(*args):
        raise RuntimeError("operation not permitted when stream is capturing")

    backend._graphs._build = cannot_capture
    with caplog.at_level("WARNING"):
        got = run(backend.generate(PROMPTS[1], GenerationParams(max_tokens=10))).text
    assert got == want and backend._graphs.disabled and backend.stats.graph_steps == 0
    assert "decoding without CUDA graphs" in caplog.text


def test_a_failed_multi_row_capture_keeps_the_decode_graphs(make, caplog):
    """If only a multi-row step cannot be captured, short prefills run eagerly and decode steps keep their graphs."""
    prompt = PROMPTS[0] + " Then we will see"   # its prefix is cached below: a short prefill
    want = run(make(exact=False).generate(prompt, GenerationParams(max_tokens=10))).text
    backend = _with_padded_decode(make(exact=False))
    run(backend.generate(PROMPTS[0], GenerationParams(max_tokens=2)))   # buffers built, the prefix cached
    build = backend._graphs._build

    def multi_row_fails(b, capacity, queries=1, keys=0, steps=1):
        if queries > 1:
            raise RuntimeError("operation not permitted when stream is capturing")
        return build(b, capacity, queries, keys, steps)

    backend._graphs._build = multi_row_fails
    before = backend.stats.graph_steps
    with caplog.at_level("WARNING"):
        got = run(backend.generate(prompt, GenerationParams(max_tokens=10))).text
    g = backend._graphs
    assert got == want and not g.disabled and not g.multi_row and backend.stats.graph_steps - before == 9
    assert all(k[1] == 1 for k in g.graphs) and "short prefills run without CUDA graphs" in caplog.text


def test_a_lone_long_prefill_runs_in_a_graph_with_the_fast_modes_logits(make, caplog):
    """A long prompt prefilled while nothing else runs (a SPRINT planner reading a stage's executions) takes one
    long-prefill graph step (B = 1, Q a bucket of LONG_QUERY_BUCKETS), with the fast mode's logits; if such a
    capture fails, only long prefills go back to eager steps."""
    from sprint.backends import decode_graphs

    prompt = LONG * 6
    base_log, padded_log = LogitLog(), LogitLog()
    base = make(exact=False, on_logits=base_log)
    padded = _with_padded_decode(make(exact=False, on_logits=padded_log))
    async def after_a_short_one(backend):   # one event loop: its first request builds the buffers
        await backend.generate(PROMPTS[0], GenerationParams(max_tokens=2))
        return await backend.generate(prompt, GenerationParams(max_tokens=6))

    for backend in (base, padded):
        run(after_a_short_one(backend), timeout=120)
    g = padded._graphs
    assert [k for k in g.graphs if k[0] == 1 and k[1] > decode_graphs.QUERY_BUCKETS[-1]]
    shared, diff = base_log.differences(padded_log)
    assert len(shared) == len(base_log.seen) and diff < 1e-4

    broken = _with_padded_decode(make(exact=False))
    build = broken._graphs._build

    def long_fails(b, capacity, queries=1, keys=0, steps=1):
        if queries > decode_graphs.QUERY_BUCKETS[-1]:
            raise RuntimeError("out of memory")
        return build(b, capacity, queries, keys, steps)

    broken._graphs._build = long_fails
    with caplog.at_level("WARNING"):
        text = run(after_a_short_one(broken), timeout=120).text
    gb = broken._graphs
    assert not gb.long_rows and gb.multi_row and not gb.disabled and "long prefills run without" in caplog.text
    assert text == run(after_a_short_one(make(exact=False)), timeout=120).text


def test_cpu_decode_attends_in_runs_of_slots_each_to_its_own_length(make):
    """CPU fast mode: with more decoding slots than SLOT_GROUP and very different lengths, the batched decode
    attention runs per run of slots, each over its own longest sequence; the logits stay the exact mode's."""
    from sprint.backends import transformers_backend as tb

    exact_log, fast_log = LogitLog(), LogitLog()
    params = GenerationParams(max_tokens=6)
    calls = [(PROMPTS[i % 4], params) for i in range(tb.SLOT_GROUP)] + [(LONG * 2 + str(i), params) for i in range(4)]
    run(together(make(max_batch=16, on_logits=exact_log), calls), timeout=120)
    fast = make(exact=False, max_batch=16, on_logits=fast_log)
    plans, inner = [], fast._slot_rows

    def recording(rows, positions):
        plan = inner(rows, positions)
        plans.append(plan.groups)
        return plan

    fast._slot_rows = recording
    run(together(fast, calls), timeout=120)
    grouped = [g for g in plans if g]
    assert grouped and all(g[0][2] < g[-1][2] for g in grouped)   # the short runs stop early
    shared, diff = exact_log.differences(fast_log)
    assert len(shared) >= len(calls) * 4
    assert diff < 1e-3


def test_warmup_sizes_buffers_for_less_context_when_it_would_not_fit(monkeypatch):
    """A large model's whole context (131,072 positions for some 7B models) for every slot would not fit: warm-up halves
    the positions it sizes the buffers for until they take at most WARMUP_MEMORY_SHARE of the free memory."""
    import types as t

    from sprint.backends import decode_graphs

    class Buf:   # [slots, kv_heads, capacity, head_dim] bf16 on a GPU
        device, shape = t.SimpleNamespace(type="cuda"), (8, 4, 256, 128)

        def element_size(self):
            return 2

    graphs = decode_graphs.DecodeGraphs.__new__(decode_graphs.DecodeGraphs)
    graphs.backend = t.SimpleNamespace(_slots=t.SimpleNamespace(keys={i: Buf() for i in range(28)}))
    monkeypatch.setattr("torch.cuda.mem_get_info", lambda device=None: (60 * 2**30, 80 * 2**30))
    # 28 layers x K and V x 4 heads x 128 x 2 bytes = 57,344 bytes per slot and position; 8 slots; 15 GiB allowed.
    assert graphs._affordable(131072, 8) == 32768
    assert graphs._affordable(4096, 8) == 4096
    Buf.device = t.SimpleNamespace(type="cpu")
    assert graphs._affordable(131072, 8) == 131072   # CPU stand-in (tests): as asked


def test_prefix_lookups_convert_a_running_sequences_tokens_once():
    """`_tokens_upto` gives `tokens[:n]` as an array and converts only the part earlier calls did not."""
    import asyncio as aio

    import numpy as np

    from sprint.backends.base import GenerationParams as P
    from sprint.backends.transformers_backend import _Request, _tokens_upto

    req = _Request(prompt_ids=[1, 2, 3], params=P(max_tokens=4), queue=aio.Queue(), submitted=0.0,
                   tokens=[1, 2, 3, 4, 5])
    assert _tokens_upto(req, 3).tolist() == [1, 2, 3] and len(req.token_array) == 3
    req.tokens += [6, 7]
    first = req.token_array
    assert _tokens_upto(req, 6).tolist() == [1, 2, 3, 4, 5, 6] and len(req.token_array) == 6
    assert np.array_equal(req.token_array[:3], first)
    assert _tokens_upto(req, 2).tolist() == [1, 2] and len(req.token_array) == 6   # nothing converted again


def test_extra_row_buckets_are_captured_in_order(monkeypatch):
    """EXTRA_BUCKETS adds row counts between the powers of two, in ascending order, below max_batch only."""
    from sprint.backends import decode_graphs

    assert decode_graphs.buckets(16) == [1, 2, 4, 8, 16]
    monkeypatch.setattr(decode_graphs, "EXTRA_BUCKETS", (6, 12, 40))
    assert decode_graphs.buckets(16) == [1, 2, 4, 6, 8, 12, 16]
    assert decode_graphs.fit(decode_graphs.buckets(16), 5) == 6


@pytest.mark.parametrize("stop", [[], [" brown"], ["x j"], ["lazy dog."]])
def test_emit_reads_a_multi_step_block_at_once_and_still_ends_at_the_stop_strings_token(make, stop):
    """A block of several new tokens (a multi-step CUDA-graph pass) is decoded at once unless a stop string may end
    in it; either way the request's text, kept tokens and finish are those of reading one token at a time."""
    import asyncio as aio

    from sprint.backends.stops import StopScanner
    from sprint.backends.transformers_backend import _Request

    backend = make(exact=False)
    prompt = backend.encode_prompt(PROMPTS[0])
    new = backend.tokenizer(" the quick brown fox jumps over the lazy dog. Done", add_special_tokens=False)["input_ids"]
    outcomes, decodes, counts = [], [], {}
    decode = backend._decode_ids
    backend._decode_ids = lambda ids: decodes.append(1) or decode(ids)
    for block in (1, 4):
        decodes.clear()
        req = _Request(prompt_ids=prompt, params=GenerationParams(max_tokens=100, stop=stop), queue=aio.Queue(),
                       submitted=0.0, tokens=list(prompt), scanner=StopScanner(stop))
        req.prefix_offset, req.read_offset = max(0, len(prompt) - 5), len(prompt)
        for i in range(0, len(new), block):
            if req.finish is not None:
                break
            req.tokens.extend(new[i:i + block])
            req.generated += len(new[i:i + block])
            backend._emit([req])
        items = []
        while not req.queue.empty():
            items.append(req.queue.get_nowait())
        text = "".join(x for x in items if isinstance(x, str))
        outcomes.append((text, len(req.tokens), req.generated, req.finish))
        counts[block] = len(decodes)
    assert outcomes[0] == outcomes[1]
    if not stop:   # two decodes per block instead of two per token
        assert counts[4] < counts[1] / 2
    if stop:
        assert outcomes[0][3] == "stop" and stop[0] not in outcomes[0][0]


def test_a_stop_token_ends_its_request_before_the_next_launch(make):
    """A token whose text is a whole stop string (a SPRINT tag: an execution's or a plan's closing tag) ends its
    request when the step's picks are read, before the next step is launched (it takes no row there and its caller
    hears of it a forward pass earlier); the text is cut exactly as the stop-string scan cuts it, the block's later
    picks are dropped and not counted. A request without such a token is left for the usual emission."""
    import asyncio as aio

    from sprint.backends.stops import StopScanner
    from sprint.backends.transformers_backend import StepRows, _Request
    from sprint.format import tags as T

    backend = make(exact=False)
    tag = T.close_tag(T.execution_name(1, 2))
    tag_id = backend.tokenizer.convert_tokens_to_ids(tag)
    assert backend._stop_ids(_Request([1], GenerationParams(stop=T.executor_stop_strings(1, 2)), aio.Queue(), 0.0)) \
        >= {tag_id}
    prompt = backend.encode_prompt(PROMPTS[0])
    words = backend.tokenizer(" the quick brown", add_special_tokens=False)["input_ids"]

    def request(stop):
        req = _Request(prompt_ids=prompt, params=GenerationParams(max_tokens=50, stop=stop), queue=aio.Queue(),
                       submitted=0.0, tokens=list(prompt), scanner=StopScanner(stop))
        req.prefix_offset, req.read_offset = max(0, len(prompt) - 5), len(prompt)
        return req

    ends, other = request(T.executor_stop_strings(1, 2)), request(["never"])
    rows = StepRows([(0, 1, None, len(prompt) - 1), (1, 2, None, len(prompt) - 1)], exact=False)
    block = words[:2] + [tag_id] + words[2:]
    left = backend._advance(rows, [ends, other], [(ends, 0), (other, 1)], [block, block])
    assert left == [other] and other.finish is None
    assert ends.finish == "stop" and ends.generated == 3 and ends.tokens == prompt + words[:2] + [tag_id]
    items = []
    while not ends.queue.empty():
        items.append(ends.queue.get_nowait())
    completion = next(x for x in items if not isinstance(x, str) and hasattr(x, "stop_string"))
    assert "".join(x for x in items if isinstance(x, str)) == completion.text == backend.tokenizer.decode(words[:2])
    assert completion.stop_string == tag and completion.generated_tokens == 3


@pytest.mark.parametrize("exact", [True, False])
def test_a_request_extending_a_just_finished_one_takes_its_kv_over_in_place(make, exact, monkeypatch):
    """A request that extends a just-finished one whole, sent as the scheduler idles (a SPRINT planner's next call
    after a plan without prompts), takes the finished request's KV over where it is: no copy into the prefix cache
    and none out of it, the same slot, and the same text as on a fresh backend."""
    from sprint.backends import transformers_backend

    monkeypatch.setattr(transformers_backend, "IDLE_KEEP_S", 5.0)   # a slow CI machine answers in time too
    backend = make(exact=exact, max_batch=4)
    kept, slots = [], []
    drop, attach = backend._drop_store, backend._attach_prefix
    backend._drop_store = lambda req: (kept.append(len(req.prompt_ids)), drop(req))[1]
    backend._attach_prefix = lambda req: (attach(req), slots.append(getattr(req.store, "slot", None)))[0]

    async def scenario():
        first = await backend.generate(PROMPTS[1], GenerationParams(max_tokens=9))
        before = backend.stats.reused_prompt_tokens
        second = await backend.generate(PROMPTS[1] + first.text, GenerationParams(max_tokens=6))
        return first, second, backend.stats.reused_prompt_tokens - before

    first, second, reused = run(scenario())
    n_first = len(backend.encode_prompt(PROMPTS[1]))
    assert reused >= n_first + first.generated_tokens - 2   # its prompt and what it wrote (less the last token)
    assert n_first not in kept   # the first request's KV never went to the prefix cache: the second took it
    if not exact:
        assert slots[0] == slots[1] == 0
    fresh = run(make(exact=exact).generate(PROMPTS[1] + first.text, GenerationParams(max_tokens=6)))
    assert second.text == fresh.text


def test_truncating_a_slot_limits_what_others_read_from_it():
    """`SlotCache.truncate` (a request taking a finished one's slot over): the slot's own shared prefix and every
    slot reading its prefix from it stop at the kept length (positions after it will be overwritten)."""
    from sprint.backends.transformers_backend import SlotCache, SlotSeq

    cache = SlotCache(4)
    a, b, c = cache.acquire(), cache.acquire(), cache.acquire()
    cache.source[b.slot] = (a.slot, 50)
    cache.source[c.slot] = (b.slot, 80)
    b.length = 120
    cache.truncate(b, 30)
    assert b.length == 30 and cache.shares(b.slot) == (a.slot, 30) and cache.shares(c.slot) == (b.slot, 30)
    cache.truncate(SlotSeq(a.slot, 200), 100)
    assert cache.shares(b.slot) == (a.slot, 30)


def test_a_finished_request_is_not_taken_over_when_a_cached_sequence_shares_more(make, monkeypatch):
    """The prompt extends a just-finished request whole but a cached sequence shares more of it: the KV comes from
    the cached one (the finished request is kept, not taken over, which would claim positions it never held), and
    the text is a fresh backend's."""
    from sprint.backends import transformers_backend

    monkeypatch.setattr(transformers_backend, "IDLE_KEEP_S", 5.0)
    backend = make(exact=False, max_batch=4)
    kept = []
    drop = backend._drop_store
    backend._drop_store = lambda req: (kept.append(req.generated), drop(req))[1]

    async def scenario():
        long = await backend.generate(PROMPTS[1], GenerationParams(max_tokens=12))
        await backend.generate(PROMPTS[3], GenerationParams(max_tokens=2))   # not a prefix: `long` is kept first
        short = await backend.generate(PROMPTS[1], GenerationParams(max_tokens=3))
        before = backend.stats.reused_prompt_tokens
        tail = await backend.generate(PROMPTS[1] + long.text + " and", GenerationParams(max_tokens=5))
        return long, short, tail, backend.stats.reused_prompt_tokens - before

    long, short, tail, reused = run(scenario())
    assert 12 in kept and 3 in kept   # both kept in the prefix cache: the short one was not taken over
    assert reused >= len(backend.encode_prompt(PROMPTS[1])) + 12 - 2
    fresh = run(make(exact=False).generate(PROMPTS[1] + long.text + " and", GenerationParams(max_tokens=5)))
    assert tail.text == fresh.text


def test_a_prepared_text_lets_a_prompt_holding_it_be_tokenized_from_its_pieces(make):
    """`prepare_prompt(text)` (a SPRINT execution as it finishes): a later prompt that holds `text` takes its pieces
    between added tokens from the cache, with the ids of a whole encoding."""
    from sprint.format import tags as T

    backend = make(exact=False)
    execution = T.open_tag(T.execution_name(1, 2)) + "\nb = 2, so 7 * b = 14\n" + T.close_tag(T.execution_name(1, 2))
    later = ("<think>\n" + T.open_tag(T.plan_name(1)) + "\nSplit.\n" + T.close_tag(T.plan_name(1)) + "\n\n"
             + T.open_tag(T.execution_block_name(1)) + "\n" + execution + "\n")
    backend.prepare_prompt(execution)
    assert "\nb = 2, so 7 * b = 14\n" in backend._prompt_ids.pieces
    reused = backend._prompt_ids.reused
    ids = backend.encode_prompt(later)
    assert backend._prompt_ids.reused == reused + 1
    assert ids == backend.tokenizer(later, add_special_tokens=True)["input_ids"]
