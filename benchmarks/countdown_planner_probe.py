"""The Countdown SPRINT planner's later plans under teacher forcing: given perfect executions, does it continue or
answer when it should, and does it name the execution that found the solution? With `--answers`: given the whole
record up to its final answer, does it copy the named execution's Solution into `\\boxed{}`?

For each validation record (a SPRINT planner record from `sprint countdown data`), the model gets the record's text up
to the opening of every plan after the first (`<Plan_k>` with k >= 2) and writes that plan greedily (in-process
backend, CPU, fast mode); the plan is compared with the record's. `--answers` also splits the exact copies by the
number of Solution lines in the context and by how many executions of the named stage follow the named one.

    python benchmarks/countdown_planner_probe.py --model countdown-sprint --data runs/countdown/data/sprint_val.jsonl
    python benchmarks/countdown_planner_probe.py --answers ...   # the final-answer copy instead
    python benchmarks/countdown_planner_probe.py --answers --variant named-last ...   # the named execution moved last
    python benchmarks/countdown_planner_probe.py --answers --teacher-forced ...   # argmax tokens and attention instead
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re

from sprint.backends.base import GenerationParams
from sprint.backends.transformers_backend import TransformersBackend
from sprint.format import layout
from sprint.format import tags as T
from sprint.models import resolve_model
from sprint.tasks.countdown.expr import check_answer
from sprint.tasks.countdown.search import SOLUTION_PREFIX, solution_lines


def planner_records(path: str):
    """(record, prompt text the planner continues, the record's completion after it) for each planner record."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("role", "planner") != "planner":
                continue
            question, body = rec["messages"][1]["content"], rec["messages"][2]["content"]
            start = layout.generation_start(layout.prompt_prefix(question, "sprint"))
            yield rec, start, layout.completion_text(start, body)


def cases(path: str, limit: int) -> list[tuple[str, int, str, str]]:
    """(record id, plan number, prompt text up to the plan's opening, the record's plan) for plans 2, 3, ..."""
    out = []
    opener = re.compile(re.escape(T.open_tag(T.plan_name(0))).replace("0", r"(\d+)") + "\n")
    for rec, start, body in planner_records(path):
        for m in opener.finditer(body):
            k = int(m.group(1))
            if k >= 2:
                end = body.index(T.close_tag(T.plan_name(k)), m.end())
                out.append((rec["id"], k, start + body[:m.end()], body[m.end():end].strip()))
        if len(out) >= limit:
            break
    return out


def answer_cases(path: str, limit: int) -> list[tuple[str, str, str, dict]]:
    """(record id, prompt text, the record's text the model should write, the record) for the far copy of each
    record's answer. Records made with `trace.restate_solution` (the answer plan ends with the "Based on" line and
    the Solution line) are cut before that Solution line, which is the far copy there (the boxed answer then copies
    the line above it); other records are cut after the final answer's opening line, and the boxed answer is the
    far copy."""
    out = []
    opening = T.open_tag(T.FINAL_ANSWER) + "\n"
    for rec, start, body in planner_records(path):
        at = body.index(opening) + len(opening)
        plan_end = body.rindex(T.close_tag(T.plan_name(0))[:-2], 0, at)  # "</Plan_" of the answer plan
        last = body[:plan_end].rstrip("\n").rsplit("\n", 1)
        if len(last) == 2 and last[1].startswith(SOLUTION_PREFIX):
            out.append((rec["id"], start + last[0] + "\n", last[1], rec))
        else:
            end = body.index(T.close_tag(T.FINAL_ANSWER), at)
            out.append((rec["id"], start + body[:at], body[at:end].strip(), rec))
        if len(out) >= limit:
            break
    return out


def answer_expression(text: str) -> str:
    """The expression of a `\\boxed{...}` answer or a `Solution ...` line."""
    if text.startswith(SOLUTION_PREFIX):
        return text[len(SOLUTION_PREFIX):].strip()
    return text[len("\\boxed{"):-1] if text.startswith("\\boxed{") and text.endswith("}") else text


def named_execution(prompt: str) -> tuple[int, int]:
    """(stage, index) of the execution the answer plan names: the first of the prompt's last "Based on" line."""
    line = [ln for ln in prompt.splitlines() if ln.startswith(T.BASED_ON_PREFIX)][-1]
    return T.parse_based_on(line)[0]


def execution_blocks(prompt: str, stage: int) -> list[tuple[int, int, int]]:
    """(index, start, end) of each `<execution_stage.j> ... </execution_stage.j>` block of the prompt, in order."""
    out = []
    for m in T.TAG_RE.finditer(prompt):
        if m["kind"] == T.EXECUTION and not m["slash"] and int(m["stage"]) == stage:
            close = T.close_tag(T.execution_name(stage, int(m["index"])))
            out.append((int(m["index"]), m.start(), prompt.index(close, m.end()) + len(close)))
    return out


def executions_after(prompt: str) -> int:
    """How many executions of the named stage come after the named execution."""
    i, j = named_execution(prompt)
    return [k for k, _, _ in reversed(execution_blocks(prompt, i))].index(j)


def named_last(prompt: str) -> str:
    """The prompt with the named execution block moved to the end of its stage's Execution block (its number kept).
    Only the blocks change places; the text between them stays, so the layout is that of a real record."""
    i, j = named_execution(prompt)
    blocks = execution_blocks(prompt, i)
    moved = [b for b in blocks if b[0] != j] + [b for b in blocks if b[0] == j]
    out, at = [], 0
    for (_, start, end), (_, s, e) in zip(blocks, moved):
        out += [prompt[at:start], prompt[s:e]]
        at = end
    return "".join(out) + prompt[at:]


VARIANTS = {"as-is": lambda prompt: prompt, "named-last": named_last}


def ratios(hits: collections.Counter, totals: collections.Counter) -> dict[str, str]:
    """{"key": "hits/total"} in the keys' order (numbers as numbers, "3+" last)."""
    return {str(k): f"{hits[k]}/{totals[k]}" for k in sorted(totals, key=lambda k: (isinstance(k, str), k))}


def probe_answers(backend, todo: list, prompts: list[str]) -> dict:
    """How often the planner, given a record's own trajectory (`prompts`: the cases' prompts, edited by `--variant`),
    copies the record's answer (see `answer_cases`)."""
    boxed = GenerationParams(max_tokens=96, stop=[T.close_tag(T.FINAL_ANSWER)])
    line = GenerationParams(max_tokens=96, stop=["\n"])

    async def run():
        return await asyncio.gather(*(backend.generate(p, line if c[2].startswith(SOLUTION_PREFIX) else boxed)
                                      for c, p in zip(todo, prompts)))

    outs = asyncio.run(run())
    counts = collections.Counter()
    examples = []
    # the splits: is a miss the choice among several Solution lines, or the distance to the named one?
    by_solutions, by_after = collections.Counter(), collections.Counter()
    hit_solutions, hit_after = collections.Counter(), collections.Counter()
    for (rid, prompt, ref, rec), out in zip(todo, outs):
        got = out.text.strip()
        counts["restated Solution line" if ref.startswith(SOLUTION_PREFIX) else "boxed answer"] += 1
        counts["copied exactly"] += got == ref
        if got != ref:  # a wrong execution named, or no copy at all
            sources = set(solution_lines(prompt))
            counts["wrong: another Solution line of the record" if answer_expression(got) in sources
                   else "wrong: no Solution line of the record"] += 1
        ok = check_answer(answer_expression(got), rec["numbers"], rec["target"]).ok
        counts["a correct answer (verifier)"] += bool(ok)
        if got != ref and len(examples) < 8:
            examples.append(f"{ref}  ->  {got}")
        # both splits describe the record as it is (before any --variant edit), so that variants compare per group
        n_sol = len(solution_lines(prompt))
        n_sol = "3+" if n_sol >= 3 else n_sol
        after = executions_after(prompt)
        by_solutions[n_sol] += 1
        by_after[after] += 1
        hit_solutions[n_sol] += got == ref
        hit_after[after] += got == ref
    return {"answers": len(todo), **counts, "examples (record -> model)": examples,
            "copied exactly by Solution lines in the context": ratios(hit_solutions, by_solutions),
            "copied exactly by executions after the named one": ratios(hit_after, by_after)}


REGIONS = ("question", "Plan_1", "named prompt", "named execution body", "named Solution line", "other executions",
           "after the executions", "answer so far")


def regions(prompt: str, question: str) -> list[tuple[str, int, int]]:
    """(region, start, end) character spans of the prompt for the attention shares (see `token_regions`)."""
    i, j = named_execution(prompt)
    ex_open, ex_close = T.open_tag(T.execution_name(i, j)), T.close_tag(T.execution_name(i, j))
    ex_start, ex_end = prompt.index(ex_open), prompt.index(ex_close)
    solution = prompt.rindex(SOLUTION_PREFIX, ex_start, ex_end)  # the named execution's last Solution line
    p_close = T.close_tag(T.prompt_name(i, j))
    return [("question", prompt.index(question), prompt.index(T.open_tag(T.THINK))),
            ("Plan_1", prompt.index(T.open_tag(T.plan_name(1))), prompt.index(T.close_tag(T.plan_name(1)))),
            ("named prompt", prompt.index(T.open_tag(T.prompt_name(i, j))), prompt.index(p_close) + len(p_close)),
            ("named execution body", ex_start, solution),
            ("named Solution line", solution, ex_end),
            ("after the executions", prompt.index(T.close_tag(T.execution_block_name(i))), len(prompt))]


def token_regions(offsets: list[tuple[int, int]], spans: list[tuple[str, int, int]], answer_tokens: int) -> list[int]:
    """The region (an index into REGIONS) of each prompt token (by its first character) and answer token. A token
    lies in the smallest span that holds it (the named prompt lies inside Plan_1); tokens in none are "other
    executions" (mostly the executions besides the named one, also the tags between blocks and later plans)."""
    out = []
    for c, _ in offsets:
        inside = [(end - start, name) for name, start, end in spans if start <= c < end]
        out.append(REGIONS.index(min(inside)[1] if inside else "other executions"))
    return out + [REGIONS.index("answer so far")] * answer_tokens


def teacher_forced(model_path, todo: list, prompts: list[str], layers: int = 4, first: int = 8) -> dict:
    """One forward pass per record on prompt + the record's answer: which answer tokens are the argmax, where the
    first wrong one is, and where the last `layers` layers' heads attend while the first `first` answer tokens are
    predicted (the share of each region in REGIONS, averaged over those query positions of all records)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_path))
    # eager attention: the implementation that returns the attention weights
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    n_layers = model.config.num_hidden_layers
    right, first_wrong, wrong_pairs = 0, collections.Counter(), collections.Counter()
    share, rows = 0.0, 0
    for (rid, _, ref, rec), prompt in zip(todo, prompts):
        # tokenized apart, as in generation: the answer's tokens start where the prompt's end
        enc = tok(prompt, return_offsets_mapping=True)
        p_ids, a_ids = enc["input_ids"], tok(ref, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model(torch.tensor([p_ids + a_ids]), output_attentions=True)
        pred = out.logits[0, len(p_ids) - 1:-1].argmax(-1).tolist()  # position len(p)-1+k predicts answer token k
        wrong = [k for k, (a, b) in enumerate(zip(a_ids, pred)) if a != b]
        if not wrong:
            right += 1
        else:
            first_wrong[wrong[0]] += 1
            wrong_pairs[f"{tok.decode([a_ids[wrong[0]]])!r} -> {tok.decode([pred[wrong[0]]])!r}"] += 1
        region = torch.tensor(token_regions(enc["offset_mapping"], regions(prompt, rec["question"]), len(a_ids)))
        onehot = torch.nn.functional.one_hot(region, len(REGIONS)).float()  # keys x regions
        queries = slice(len(p_ids) - 1, len(p_ids) - 1 + min(first, len(a_ids)))
        att = torch.stack([out.attentions[L][0, :, queries] for L in range(n_layers - layers, n_layers)])
        share = share + (att @ onehot).sum(2)  # layers x heads x regions, summed over the query positions
        rows += att.shape[2]
    share = (share / rows).tolist()
    return {"answers": len(todo),
            "teacher-forced answers with every token the argmax": f"{right}/{len(todo)}",
            "first wrong token: index in the answer (0: its first token, e.g. of \\boxed{)":
                {str(k): first_wrong[k] for k in sorted(first_wrong)},
            "first wrong token: most common (reference -> predicted)": dict(wrong_pairs.most_common(10)),
            f"attention share by region, queries predicting the first {first} answer tokens (layers from 0)":
                {f"layer {n_layers - layers + L} head {h}": {r: round(v, 3) for r, v in zip(REGIONS, heads)}
                 for L, by_head in enumerate(share) for h, heads in enumerate(by_head)}}


def based_on(plan: str) -> str | None:
    """The plan's "Based on execution_i.j:" line (None: the plan goes on with prompts)."""
    return next((ln for ln in plan.splitlines() if ln.startswith(T.BASED_ON_PREFIX)), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="countdown-sprint")
    ap.add_argument("--data", default="runs/countdown/data/sprint_val.jsonl")
    ap.add_argument("--n", type=int, default=60, help="plans to probe (at least; with --answers: records)")
    ap.add_argument("--answers", action="store_true", help="probe the final-answer copy instead of the plans")
    ap.add_argument("--variant", choices=list(VARIANTS), default="as-is",
                    help="with --answers: the prompt as is, or with the named execution moved last in its stage")
    ap.add_argument("--teacher-forced", action="store_true",
                    help="with --answers: one forward pass on prompt + answer (argmax tokens, attention) instead")
    args = ap.parse_args()
    if (args.variant != "as-is" or args.teacher_forced) and not args.answers:
        ap.error("--variant and --teacher-forced go with --answers")
    if args.answers:
        todo = answer_cases(args.data, args.n)
        prompts = [VARIANTS[args.variant](c[1]) for c in todo]
        result = (teacher_forced(resolve_model(args.model), todo, prompts) if args.teacher_forced else
                  probe_answers(TransformersBackend(resolve_model(args.model), device="cpu", max_batch=32,
                                                    exact=False), todo, prompts))
        print(json.dumps({"model": args.model, "variant": args.variant, **result}, indent=1))
        return
    backend = TransformersBackend(resolve_model(args.model), device="cpu", max_batch=32, exact=False)
    todo = cases(args.data, args.n)
    params = GenerationParams(max_tokens=200, stop=[T.close_tag(T.plan_name(0))[:-2]])  # "</Plan_" of any stage

    async def run():
        return await asyncio.gather(*(backend.generate(c[2], params) for c in todo))

    outs = asyncio.run(run())
    counts = collections.Counter()
    for (rid, k, _, ref), out in zip(todo, outs):
        got = out.text.strip()
        should, did = based_on(ref), based_on(got)
        counts[("should answer" if should else "should continue", "answered" if did else "continued")] += 1
        if should and did:
            counts["named the right execution" if should == did else "named another execution"] += 1
        if should:  # the outcome line opens the plan; with trace.outcome_solution it carries the far copy
            counts["answer plans: outcome line exactly as the record"] += (
                got.split("\n", 1)[0].strip() == ref.split("\n", 1)[0].strip())
        counts["plan exactly as the record"] += got == ref
    print(json.dumps({"model": args.model, "plans": len(todo), **{" / ".join(k) if isinstance(k, tuple) else k: v
                                                                  for k, v in sorted(counts.items(), key=str)}},
                     indent=1))


if __name__ == "__main__":
    main()
