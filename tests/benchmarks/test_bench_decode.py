"""`benchmarks/bench_decode.py` and `profile_decode.py` run against the real backend (their step wrappers must
follow `TransformersBackend._step`'s signature) and report decode-only steps."""

from __future__ import annotations

import json

from sprint.models import resolve_model


def test_bench_decode_times_decode_steps_of_the_bundled_model(tmp_path, load_benchmark):
    mod = load_benchmark("benchmarks/bench_decode.py")
    out = tmp_path / "decode.json"
    model = str(resolve_model("countdown-sprint"))
    assert mod.main(["--models", model, "--batches", "2", "--modes", "fast", "--new-tokens", "6", "--repeats", "1",
                     "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    rows = rows["results"]
    assert rows and all(r["batch"] == 2 and r["decode_steps"] >= 4 and r["step_ms_median"] > 0 for r in rows)


def test_profile_decode_measures_per_step_times(capsys, load_benchmark):
    mod = load_benchmark("benchmarks/profile_decode.py")
    assert mod.main(["--device", "cpu", "--lengths", "40", "--batches", "1", "--sdpa", "ours", "--profile-steps", "0",
                     "--new-tokens", "4"]) == 0
    assert "matmul" in capsys.readouterr().out   # the table's attention column: the CPU runs the backend's own path
