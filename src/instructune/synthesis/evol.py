"""Evol-Instruct (Xu et al. 2023): rewrite instructions into harder (in-depth) or new (in-breadth)
ones over several rounds, answer them, and eliminate the failed evolutions.

Round r evolves every survivor of round r-1 (round 1: the seeds) with an operation drawn from
`evol_instruct.operations`. An evolution fails when it adds nothing (identical to its parent, or the
optional model check says "Same"), echoes the rewriting prompt, or its answer is an apology
(contains "sorry" and is short), only stop words, or cut by the length limit. Failed evolutions are
counted by reason and leave the pool; the kept ones are written with their answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from instructune.synthesis.backends import Request, Response
from instructune.synthesis.context import SynthContext
from instructune.synthesis.filters import answer_failure, evolution_failure
from instructune.synthesis.parsing import yes_no
from instructune.synthesis.seeds import SeedTask


@dataclass(frozen=True)
class Evolving:
    id: str
    text: str


def seed_prompt(seed: SeedTask) -> str:
    """The full prompt a seed stands for: its instruction plus its first instance's input."""
    first = seed.instances[0].input if seed.instances else ""
    return f"{seed.instruction}\n\n{first}" if first else seed.instruction


def run_evol_instruct(ctx: SynthContext, seeds: list[SeedTask]) -> str:
    current = [Evolving(s.id, seed_prompt(s)) for s in seeds]
    for round_ in range(1, ctx.cfg.evol_instruct.rounds + 1):
        survivors: list[Evolving] = []
        for start in range(0, len(current), ctx.cfg.request_batch_size):
            if ctx.remaining() <= 0:
                return "reached num_instructions"
            batch = current[start : start + ctx.cfg.request_batch_size]
            survivors += _evolve_batch(ctx, batch, round_)
        if not survivors:
            return f"no evolution survived round {round_}"
        current = survivors
    if ctx.remaining() <= 0:
        return "reached num_instructions"
    return f"finished {ctx.cfg.evol_instruct.rounds} rounds"


def _evolve_prompt(ctx: SynthContext, item: Evolving, operation: str) -> str:
    if operation == "breadth":
        return ctx.prompts.render("evol_in_breadth", instruction=item.text)
    operation_text = ctx.prompts.render(f"evol_op_{operation}")
    return ctx.prompts.render("evol_in_depth", instruction=item.text, operation_text=operation_text)


def _evolve_batch(ctx: SynthContext, batch: list[Evolving], round_: int) -> list[Evolving]:
    ops: list[str] = [ctx.rng.choice(ctx.cfg.evol_instruct.operations) for _ in batch]
    prompts = [_evolve_prompt(ctx, it, op) for it, op in zip(batch, ops, strict=True)]
    live: list[tuple[Evolving, str, str, Request]] = []
    asked = ctx.ask(prompts, "generate")
    for item, op, (request, response) in zip(batch, ops, asked, strict=True):
        ctx.tally.add(round_, "instruction", "generated")
        evolved = response.text.strip()
        reason = _evolution_response_problem(response) or evolution_failure(item.text, evolved)
        if reason is not None:
            ctx.tally.drop_instruction(round_, reason, {"parent": item.text, "evolved": evolved})
            continue
        live.append((item, op, evolved, request))
    live = _drop_same_as_parent(ctx, live, round_)
    answers = ctx.ask([evolved for _, _, evolved, _ in live], "answer")
    survivors = []
    for (item, operation, evolved, request), (answer_req, answer) in zip(
        live, answers, strict=True
    ):
        reason = answer_failure(answer, ctx.cfg.evol_instruct.sorry_max_words)
        if reason is None and ctx.remaining() <= 0:
            reason = "not_needed"
        if reason is not None:
            example = {"parent": item.text, "evolved": evolved, "answer": answer.text[:200]}
            ctx.tally.drop_instruction(round_, reason, example)
            continue
        ctx.tally.keep_instruction(round_)
        row_id = ctx.emit(
            instruction=evolved,
            input="",
            output=answer.text.strip(),
            round_=round_,
            operation=operation,
            parent_id=item.id,
            request=request,
            extra={
                "answer_prompt_hash": ctx.client.key(answer_req),
                "filter_scores": {
                    "answer_words": len(answer.text.split()),
                    "equality_checked": ctx.cfg.evol_instruct.equality_check,
                },
            },
        )
        survivors.append(Evolving(row_id, evolved))
    return survivors


def _evolution_response_problem(response: Response) -> str | None:
    if response.error:
        return "request_error"
    if not response.text.strip():
        return "empty_evolution"
    if response.finish_reason == "length":
        return "evolution_cut_by_length"
    return None


def _drop_same_as_parent(
    ctx: SynthContext, live: list[tuple[Evolving, str, str, Request]], round_: int
) -> list[tuple[Evolving, str, str, Request]]:
    """The optional model check for information gain ("Same": the evolution added nothing)."""
    if not ctx.cfg.evol_instruct.equality_check or not live:
        return live
    prompts = [
        ctx.prompts.render("evol_equal", first=item.text, second=evolved)
        for item, _, evolved, _ in live
    ]
    kept = []
    for entry, (_, verdict) in zip(live, ctx.ask(prompts, "judge"), strict=True):
        if yes_no(verdict.text, yes="same", no="different") is True:
            example = {"parent": entry[0].text, "evolved": entry[2]}
            ctx.tally.drop_instruction(round_, "no_information_gain", example)
        else:
            kept.append(entry)
    return kept
