"""The Countdown SPRINT planner's later plans under teacher forcing: given perfect executions, does it continue or
answer when it should, and does it name the execution that found the solution? With `--answers`: given the whole
record up to its final answer, does it copy the named execution's Solution into `\\boxed{}`?

For each validation record (a SPRINT planner record from `sprint countdown data`), the model gets the record's text up
to the opening of every plan after the first (`<Plan_k>` with k >= 2) and writes that plan greedily (in-process
backend, CPU); the plan is compared with the record's.

    python benchmarks/countdown_planner_probe.py --model countdown-sprint --data runs/countdown/data/sprint_val.jsonl
    python benchmarks/countdown_planner_probe.py --answers ...   # the final-answer copy instead
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


def probe_answers(backend, path: str, n: int) -> dict:
    """How often the planner, given a record's own trajectory, copies the record's answer (see `answer_cases`)."""
    todo = answer_cases(path, n)
    boxed = GenerationParams(max_tokens=96, stop=[T.close_tag(T.FINAL_ANSWER)])
    line = GenerationParams(max_tokens=96, stop=["\n"])

    async def run():
        return await asyncio.gather(*(backend.generate(c[1], line if c[2].startswith(SOLUTION_PREFIX) else boxed)
                                      for c in todo))

    outs = asyncio.run(run())
    counts = collections.Counter()
    examples = []
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
    return {"answers": len(todo), **counts, "examples (record -> model)": examples}


def based_on(plan: str) -> str | None:
    """The plan's "Based on execution_i.j:" line (None: the plan goes on with prompts)."""
    return next((ln for ln in plan.splitlines() if ln.startswith(T.BASED_ON_PREFIX)), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="countdown-sprint")
    ap.add_argument("--data", default="runs/countdown/data/sprint_val.jsonl")
    ap.add_argument("--n", type=int, default=60, help="plans to probe (at least; with --answers: records)")
    ap.add_argument("--answers", action="store_true", help="probe the final-answer copy instead of the plans")
    args = ap.parse_args()
    backend = TransformersBackend(resolve_model(args.model), device="cpu", max_batch=16)
    if args.answers:
        print(json.dumps({"model": args.model, **probe_answers(backend, args.data, args.n)}, indent=1))
        return
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
        counts["plan exactly as the record"] += got == ref
    print(json.dumps({"model": args.model, "plans": len(todo), **{" / ".join(k) if isinstance(k, tuple) else k: v
                                                                  for k, v in sorted(counts.items(), key=str)}},
                     indent=1))


if __name__ == "__main__":
    main()
