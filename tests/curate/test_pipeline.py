"""The pipeline in process with a chat double: inputs (JSONL, saved and plain dataset directories), concurrency
limit, rejections before any LLM call, summary and histogram."""

import asyncio
import json

import pytest

from sprint.backends.base import Completion
from sprint.curate.llm import LLMEndpoint, UsageLedger
from sprint.curate.pipeline import CurateConfig, FieldMap, ratio_histogram, run

from scripted_llm import answer_for

TRACE = ("Start by listing the parts. Part one needs a sum. 1 + 2 = 3. Then 3 + 3 = 6. So part one is 6. "
         "Also 6 + 0 = 6. Part two needs a product. 2 * 3 = 6. Then 6 * 1 = 6. So part two is 6. Fine. "
         "Both parts agree. So the answer is 6. Check once more. Yes, 6.")
ROWS = [{"problem": f"Problem {k}: what is six?", "thought": TRACE + f" Note {k}.",
         "solution": "It is $\\boxed{6}$."} for k in range(6)]


class CountingChat:
    """Scripted answers after a short sleep; tracks how many calls are in flight at once."""

    def __init__(self, faults=None):
        self.faults = faults
        self.active = self.peak = self.calls = 0

    async def chat(self, messages, params):
        self.active += 1
        self.calls += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.01)
        self.active -= 1
        text = answer_for(messages, self.faults)
        return Completion(text=text, generated_tokens=len(text) // 4, prompt_tokens=100)


def config(tmp_path, inputs, chat, **kw):
    return CurateConfig(inputs=[str(i) for i in inputs], out_dir=tmp_path / "out",
                        extract=LLMEndpoint("ext", chat), dag=LLMEndpoint("dag", chat),
                        fields=FieldMap(question="problem", trace="thought", answer="solution",
                                        solution="solution"), progress=False, **kw)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_concurrency_limit_and_outputs(tmp_path):
    chat = CountingChat()
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    summary = run(config(tmp_path, [src], chat, concurrency=2), UsageLedger(prices={"ext": (1.0, 2.0)}))
    assert chat.peak <= 2 and chat.calls == 12
    assert summary.total == 6 and summary.kept == 6
    records = [json.loads(x) for x in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    records = [r for r in records if r.get("role") != "executor"]
    assert [r["id"] for r in records[::2]] == [f"in.jsonl:{k}" for k in range(1, 7)]  # input order
    assert summary.usage["ext"]["calls"] == 6 and summary.usage["ext"]["cost_usd"] > 0
    assert "ratio (executions / stages)" in summary.text()


def test_width_and_comment_options_reach_the_records(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS[:1])
    run(config(tmp_path, [src], CountingChat(), width=1, min_ratio=0))
    rec = json.loads((tmp_path / "out" / "records.jsonl").read_text().splitlines()[0])
    body = rec["messages"][2]["content"]
    assert "<prompt_1.1>" in body and "<prompt_1.2>" not in body  # one prompt per stage


def test_rejections_before_llm_calls(tmp_path):
    rows = [dict(ROWS[0], thought=TRACE + " Final: $\\boxed{6}$.", solution="It is $\\boxed{7}$.",
                 problem="wrong one"),
            dict(ROWS[1], thought="Use <Plan_1> here. Then stop.", problem="tagged"),
            dict(ROWS[2], solution="No box here.", problem="no box")]
    chat = CountingChat()
    cfg = config(tmp_path, [write_jsonl(tmp_path / "in.jsonl", rows)], chat)
    cfg.fields.solution = None  # final answers come from the trace
    cfg.fields.answer = "solution"
    summary = run(cfg)
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["step"], r["code"]) for r in rejects] == [("answer", "wrong_answer"), ("input", "format_tags"),
                                                         ("answer", "no_final_answer")]
    assert chat.calls == 0 and summary.kept == 0


def test_saved_dataset_directory_and_plain_data_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS[:2]).save_to_disk(str(saved))
    summary = run(config(tmp_path, [saved], CountingChat(), executor_records=False))
    assert summary.kept == 2
    ids = [json.loads(x)["id"] for x in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert ids == ["saved:0", "saved:0", "saved:1", "saved:1"]
    plain = tmp_path / "plain"
    plain.mkdir()
    write_jsonl(plain / "train.jsonl", ROWS[:3])
    cfg = config(tmp_path, [plain], CountingChat())
    cfg.out_dir = tmp_path / "out2"
    assert run(cfg).kept == 3


def test_id_field_duplicates_are_an_error(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [dict(r, uid="same") for r in ROWS[:2]])
    cfg = config(tmp_path, [src], CountingChat())
    cfg.fields.id = "uid"
    with pytest.raises(ValueError, match="duplicate ids"):
        run(cfg)


def test_ratio_histogram_bins():
    h = dict(ratio_histogram([0.2, 1.0, 1.49, 1.5, 2.9, 7.0]))
    assert h["0-0.5"] == 1 and h["1-1.5"] == 2 and h["1.5-2"] == 1 and h["2.5-3"] == 1 and h[">=4"] == 1
    assert ratio_histogram([]) == []
