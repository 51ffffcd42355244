"""`benchmarks/bench_scheduler.py`: the scripted step drives the real scheduler (streams, stop scanning, queues) and
the per-step numbers it reports are consistent."""

from __future__ import annotations

import json


def test_scripted_streams_decode_the_script_and_report_steps(tmp_path, load_benchmark):
    mod = load_benchmark("benchmarks/bench_scheduler.py")
    out = tmp_path / "sched.json"
    assert mod.main(["--streams", "3", "--delay-ms", "1", "--tokens", "20", "--repeats", "1", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["streams"] == 3 and row["ms_per_step"] >= 1.0 and row["host_ms_per_step"] >= 0
    # The scripted step gives each stream the script's tokens in order: the text is the script's text.
    backend = mod.make_backend("countdown-sprint")
    backend.eos_ids = set()
    script = backend.tokenizer(mod.TEXT, add_special_tokens=False)["input_ids"]
    backend._eager_step = mod.scripted_step(backend, script, 0.0)
    import asyncio

    from sprint.backends.base import GenerationParams

    text = asyncio.run(backend.generate("<Question>\nx\n</Question>\n", GenerationParams(max_tokens=len(script)))).text
    assert text == backend.tokenizer.decode(script)
