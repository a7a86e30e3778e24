"""Unnatural-style generation (Honovich et al. 2022): k demonstrations from the task pool elicit a
new instruction-input-constraints triple; the model answers it; then paraphrases of the
instruction (same input, same output) add surface variety.

Exact duplicates of an (instruction, input) pair already seen are dropped, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

from instructune.synthesis.backends import Request, Response
from instructune.synthesis.context import SynthContext
from instructune.synthesis.parsing import (
    example_blocks,
    labelled_fields,
    no_input,
    numbered_items,
)
from instructune.synthesis.seeds import SeedTask


@dataclass(frozen=True)
class Triple:
    instruction: str
    input: str
    constraints: str

    def prompt(self) -> str:
        """The full instruction (with its constraints); the input goes after it."""
        if self.constraints:
            return f"{self.instruction}\n{self.constraints}"
        return self.instruction


def _demo(seed: SeedTask) -> Triple:
    first = seed.instances[0].input if seed.instances else ""
    return Triple(seed.instruction, first, seed.constraints)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def run_unnatural(ctx: SynthContext, seeds: list[SeedTask]) -> str:
    demos = [_demo(s) for s in seeds]
    k = min(ctx.cfg.unnatural.demonstrations, len(demos))
    seen = {(_norm(d.instruction), _norm(d.input)) for d in demos}
    step = stale = 0
    while ctx.remaining() > 0:
        step += 1
        kept_before = ctx.tally.kept_instructions
        prompts = [
            ctx.prompts.render("unnatural_generate", examples=ctx.rng.sample(demos, k))
            for _ in range(ctx.cfg.request_batch_size)
        ]
        triples: list[tuple[Triple, Request]] = []
        for request, response in ctx.ask(prompts, "generate"):
            ctx.tally.add(step, "instruction", "generated")
            triple = _parse_triple(ctx, response, step)
            if triple is None:
                continue
            key = (_norm(triple.instruction), _norm(triple.input))
            if key in seen:
                ctx.tally.drop_instruction(step, "duplicate", triple.instruction)
                continue
            seen.add(key)
            triples.append((triple, request))
        _answer_and_paraphrase(ctx, triples, step)
        stale = 0 if ctx.tally.kept_instructions > kept_before else stale + 1
        if stale >= ctx.cfg.max_stale_steps:
            return f"no instruction kept in {stale} consecutive steps"
    return "reached num_instructions"


def _parse_triple(ctx: SynthContext, response: Response, step: int) -> Triple | None:
    if response.error:
        ctx.tally.drop_instruction(step, "request_error", response.error)
        return None
    # The answer may run on into further examples: the first one with an instruction counts.
    blocks = example_blocks(response.text)
    parsed = [labelled_fields(b, ("Instruction",), ("Input", "Constraints")) for b in blocks]
    found = [(i, f) for i, f in enumerate(parsed) if f is not None and f["instruction"]]
    if not found:
        ctx.tally.drop_instruction(step, "unparsable_response", response.text[:200])
        return None
    index, fields = found[0]
    if response.finish_reason == "length" and index == len(blocks) - 1:
        ctx.tally.drop_instruction(step, "cut_by_length", response.text[:200])
        return None
    constraints = no_input(fields["constraints"])
    return Triple(fields["instruction"], no_input(fields["input"]), constraints)


def _answer_and_paraphrase(
    ctx: SynthContext, triples: list[tuple[Triple, Request]], step: int
) -> None:
    prompts = [f"{t.prompt()}\n\n{t.input}" if t.input else t.prompt() for t, _ in triples]
    answered = []
    for (triple, request), (answer_req, answer) in zip(
        triples, ctx.ask(prompts, "answer"), strict=True
    ):
        reason = _answer_problem(answer)
        if reason is None and ctx.remaining() <= 0:
            reason = "not_needed"
        if reason is not None:
            ctx.tally.drop_instruction(step, reason, {"instruction": triple.instruction})
            continue
        ctx.tally.keep_instruction(step)
        row_id = ctx.emit(
            instruction=triple.prompt(),
            input=triple.input,
            output=answer.text.strip(),
            round_=step,
            operation="generate",
            parent_id=None,
            request=request,
            extra={
                "constraints": triple.constraints,
                "answer_prompt_hash": ctx.client.key(answer_req),
                "filter_scores": {"answer_words": len(answer.text.split())},
            },
        )
        answered.append((triple, row_id, answer.text.strip()))
    _paraphrase(ctx, answered, step)


def _answer_problem(answer: Response) -> str | None:
    if answer.error:
        return "answer_error"
    if not answer.text.strip():
        return "empty_answer"
    if answer.finish_reason == "length":
        return "answer_cut_by_length"
    return None


def _paraphrase(ctx: SynthContext, answered: list[tuple[Triple, str, str]], step: int) -> None:
    count = ctx.cfg.unnatural.paraphrases
    if count == 0 or not answered:
        return
    prompts = [
        ctx.prompts.render("unnatural_paraphrase", instruction=t.instruction, count=count)
        for t, _, _ in answered
    ]
    for (triple, parent_id, output), (request, response) in zip(
        answered, ctx.ask(prompts, "generate"), strict=True
    ):
        items = [] if response.error else numbered_items(response.text)
        if response.finish_reason == "length" and items:
            ctx.tally.add(step, "paraphrase", "cut_by_length", items.pop())
        seen = {_norm(triple.instruction)}
        for text in items[:count]:
            ctx.tally.add(step, "paraphrase", "generated")
            if _norm(text) in seen:
                ctx.tally.add(step, "paraphrase", "duplicate", text)
                continue
            seen.add(_norm(text))
            ctx.tally.add(step, "paraphrase", "kept")
            para = Triple(text, triple.input, triple.constraints)
            ctx.emit(
                instruction=para.prompt(),
                input=para.input,
                output=output,
                round_=step,
                operation="paraphrase",
                parent_id=parent_id,
                request=request,
                extra={"constraints": triple.constraints, "filter_scores": {"duplicate": False}},
            )
        if not items:
            ctx.tally.add(step, "paraphrase", "unparsable_response", response.text[:200])
