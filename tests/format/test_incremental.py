"""format.incremental: the contexts the orchestrator builds are byte-identical to prefixes of `render()`."""

from __future__ import annotations

import copy

from sprint.format import parse, render
from sprint.format import incremental as F
from sprint.format.trajectory import Execution, Plan, Prompt, Stage, Trajectory, render_question


def _references(shared_dir):
    return sorted((shared_dir / "fixtures" / "sprint_reference" / "math500_sprint").glob("*.txt"))


def test_stage_and_executor_contexts_are_prefixes_of_render_on_reference_trajectories(shared_dir):
    files = _references(shared_dir)
    assert len(files) == 100
    checked = 0
    for path in files:
        traj = parse(path.read_text())
        start = render_question(traj.question) + "\n\n" + "<think>\n"
        full = render(traj)
        for k, stage in enumerate(traj.stages):
            ctx = F.stage_context(start, traj.stages[:k])
            assert full.startswith(ctx), path.name
            assert full.startswith(ctx + F.plan_opening(stage.index))
            for j, prompt in enumerate(stage.prompts, start=1):
                # The trajectory whose stage k is cut after prompt j and whose block starts with execution j.
                cut = copy.deepcopy(traj)
                cut.stages = cut.stages[: k + 1]
                cut.stages[k].plan = F.plan_through(stage.plan, j)
                cut.stages[k].executions = [Execution(stage.index, prompt.index, "x")]
                cut.final_answer = None
                want = render(cut).split("<execution_%d.%d>\n" % (stage.index, prompt.index))[0]
                want += "<execution_%d.%d>\n" % (stage.index, prompt.index)
                assert F.executor_context(ctx, stage.index, stage.plan, j) == want, (path.name, stage.index, j)
                checked += 1
        assert full.startswith(F.stage_context(start, traj.stages) + F.final_answer_opening())
    assert checked > 300


def test_find_tags_window_and_split_tags():
    text = "a <prompt_1.1> b </prompt_1.1> c </Plan_2> 1<2>3"
    tags = F.find_tags(text)
    assert [t.text for t in tags] == ["<prompt_1.1>", "</prompt_1.1>", "</Plan_2>"]
    later = F.find_tags(text, 10)
    assert [t.text for t in later] == ["</prompt_1.1>", "</Plan_2>"]
    assert later[0].start == text.index("</prompt_1.1>") and text[later[0].start:later[0].end] == "</prompt_1.1>"
    assert F.is_close(later[0], "prompt") and not F.is_open(later[0], "prompt")
    assert F.find_tags("x </prompt_1.") == []
    assert len("</execution_12.34>") <= F.MAX_TAG_CHARS


def test_plan_through_and_renumber():
    plan = Plan(["intro ", Prompt(4, 2, "a"), " mid ", Prompt(1, 1, "b"), " end"])
    assert F.plan_through(plan, 1).parts == ["intro ", Prompt(4, 2, "a")]
    assert len(F.plan_through(plan, 2).parts) == 4
    changed = F.renumber_prompts(plan, 3)
    assert changed == [("prompt_4.2", "prompt_3.1"), ("prompt_1.1", "prompt_3.2")]
    assert [p.id for p in plan.prompts] == ["3.1", "3.2"]
    assert F.renumber_prompts(plan, 3) == []


def test_stage_context_without_stages_is_start():
    t = Trajectory(question="q", stages=[Stage(1, Plan(["p"]))], final_answer="a")
    start = render_question("q") + "\n\n<think>\n"
    assert F.stage_context(start, []) == start
    assert render(t).startswith(F.stage_context(start, t.stages))


# The pre-tokenizer regex of Qwen2 / DeepSeek-R1-Distill-Qwen (Llama-3 uses the same shape): BPE never merges
# across its pieces, so a prompt that ends on a piece boundary gets the same token ids as in training.
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


def test_contexts_end_on_pre_token_boundaries_of_the_training_text(shared_dir):
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated")

    def boundaries(text):
        return {end for _, (_, end) in split.pre_tokenize_str(text)}

    checked = 0
    for path in _references(shared_dir)[:40]:
        traj = parse(path.read_text())
        start = render_question(traj.question) + "\n\n" + "<think>\n"
        full = render(traj)
        ends = boundaries(full)
        for k, stage in enumerate(traj.stages):
            ctx = F.stage_context(start, traj.stages[:k])
            assert {len(ctx), len(ctx + F.plan_opening(stage.index))} <= ends, path.name
            if stage.prompts:
                cut = copy.deepcopy(traj)
                cut.stages = cut.stages[: k + 1]
                cut.stages[k].plan = F.plan_through(stage.plan, 1)
                cut.stages[k].executions = stage.executions[:1]
                ex = F.executor_context(ctx, stage.index, stage.plan, 1)
                assert render(cut).startswith(ex) and len(ex) in boundaries(render(cut)), path.name
            checked += 1
        assert len(F.stage_context(start, traj.stages) + F.final_answer_opening()) in ends
    assert checked > 100
