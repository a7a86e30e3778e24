"""Self-Instruct (Wang et al. 2022): bootstrap instructions from seed tasks, then instances.

Each step asks `request_batch_size` prompts, each showing 8 in-context instructions (6 human seeds
and 2 machine-generated ones once there are any). New instructions pass the heuristic filters and
the ROUGE-L novelty check against the growing pool; the kept ones are classified (classification
task or not, a few-shot yes/no prompt) and get instances: input-first for generation tasks,
output-first (the class label, then an input) for classification tasks, then cleaned up.
"""

from __future__ import annotations

from dataclasses import dataclass

from instructune.synthesis.backends import Request, Response
from instructune.synthesis.context import SynthContext
from instructune.synthesis.filters import clean_instances, instruction_drop_reason
from instructune.synthesis.novelty import NoveltyCheck, NoveltyIndex
from instructune.synthesis.parsing import (
    input_first_instances,
    numbered_items,
    output_first_instances,
    yes_no,
)
from instructune.synthesis.seeds import SeedTask

_CLASSIFY_EXAMPLES = 6  # per answer (yes and no) in the identification prompt
_INSTANCE_EXAMPLES = 2  # seed tasks shown in an instance-generation prompt


@dataclass
class Candidate:
    instruction: str
    novelty: NoveltyCheck
    request: Request
    is_classification: bool = False


def run_self_instruct(ctx: SynthContext, seeds: list[SeedTask]) -> str:
    """Bootstrap until `num_instructions` are kept; returns why it stopped."""
    cfg = ctx.cfg.self_instruct
    pool = NoveltyIndex(top_k=cfg.most_similar)
    for seed in seeds:
        pool.add(seed.instruction)
    machine: list[str] = []
    step = stale = 0
    while ctx.remaining() > 0:
        step += 1
        kept_before = ctx.tally.kept_instructions
        candidates = _generate_instructions(ctx, seeds, machine, pool, step)
        machine.extend(c.instruction for c in candidates)
        _classify(ctx, seeds, candidates, step)
        _generate_instances(ctx, seeds, candidates, step)
        stale = 0 if ctx.tally.kept_instructions > kept_before else stale + 1
        if stale >= ctx.cfg.max_stale_steps:
            return f"no instruction kept in {stale} consecutive steps"
    return "reached num_instructions"


def _prompt_tasks(ctx: SynthContext, seeds: list[SeedTask], machine: list[str]) -> list[str]:
    cfg = ctx.cfg.self_instruct
    n_machine = min(cfg.machine_instructions, len(machine))
    n_human = min(cfg.prompt_instructions - n_machine, len(seeds))
    tasks = [s.instruction for s in ctx.rng.sample(seeds, n_human)]
    tasks += ctx.rng.sample(machine, n_machine)
    ctx.rng.shuffle(tasks)
    return tasks


def _generate_instructions(
    ctx: SynthContext,
    seeds: list[SeedTask],
    machine: list[str],
    pool: NoveltyIndex,
    step: int,
) -> list[Candidate]:
    cfg = ctx.cfg.self_instruct
    prompts = [
        ctx.prompts.render("self_instruct_generate", tasks=_prompt_tasks(ctx, seeds, machine))
        for _ in range(ctx.cfg.request_batch_size)
    ]
    candidates: list[Candidate] = []
    for request, response in ctx.ask(prompts, "generate"):
        items = _response_items(ctx, response, step)
        for text in items:
            ctx.tally.add(step, "instruction", "generated")
            if len(candidates) >= ctx.remaining():
                ctx.tally.add(step, "instruction", "not_needed")
                continue
            reason = instruction_drop_reason(text, cfg.keywords, cfg.min_words, cfg.max_words)
            if reason is not None:
                ctx.tally.drop_instruction(step, reason, text)
                continue
            novel, check = pool.admit(text, cfg.rouge_threshold)
            if not novel:
                similar = check.most_similar[0].text if check.most_similar else ""
                example = {"instruction": text, "score": check.max_score, "similar": similar}
                ctx.tally.drop_instruction(step, "too_similar", example)
                continue
            candidates.append(Candidate(text, check, request))
    return candidates


def _response_items(ctx: SynthContext, response: Response, step: int) -> list[str]:
    """The numbered instructions of one answer; a failed or unreadable answer is counted."""
    if response.error:
        ctx.tally.add(step, "response", "request_error", response.error)
        return []
    items = numbered_items(response.text)
    if response.finish_reason == "length" and items:
        ctx.tally.add(step, "instruction", "cut_by_length", items.pop())
    if not items:
        reason = "empty_response" if not response.text.strip() else "unparsable_response"
        ctx.tally.add(step, "response", reason, response.text[:200])
    return items


def _classify(ctx: SynthContext, seeds: list[SeedTask], cands: list[Candidate], step: int) -> None:
    if not ctx.cfg.self_instruct.classify or not cands:
        return
    yes = [s for s in seeds if s.is_classification][:_CLASSIFY_EXAMPLES]
    no = [s for s in seeds if s.is_classification is False][:_CLASSIFY_EXAMPLES]
    examples = [s for pair in zip(yes, no, strict=False) for s in pair]
    prompts = [
        ctx.prompts.render("self_instruct_classify", examples=examples, instruction=c.instruction)
        for c in cands
    ]
    for cand, (_, response) in zip(cands, ctx.ask(prompts, "judge"), strict=True):
        answer = yes_no(response.text)
        if answer is None:
            # An unreadable verdict falls back to the more common kind (generation).
            ctx.tally.add(step, "classification", "unclear", response.text[:100])
        cand.is_classification = bool(answer)
        ctx.tally.add(step, "classification", "yes" if answer else "no")


def _generate_instances(
    ctx: SynthContext, seeds: list[SeedTask], cands: list[Candidate], step: int
) -> None:
    prompts = [_instance_prompt(ctx, seeds, c) for c in cands]
    for cand, (request, response) in zip(cands, ctx.ask(prompts, "answer"), strict=True):
        if response.error:
            ctx.tally.drop_instruction(step, "request_error", response.error)
            continue
        parse = output_first_instances if cand.is_classification else input_first_instances
        cut = response.finish_reason == "length"
        kept, drops, task_drop = clean_instances(parse(response.text), cut)
        for reason in drops:
            ctx.tally.add(step, "instance", reason, {"instruction": cand.instruction})
        if task_drop is not None:
            ctx.tally.drop_instruction(step, task_drop, {"instruction": cand.instruction})
            continue
        ctx.tally.keep_instruction(step)
        extra = kept[ctx.cfg.self_instruct.max_instances :]
        if extra:
            ctx.tally.add(step, "instance", "over_max_instances", n=len(extra))
        kept = kept[: ctx.cfg.self_instruct.max_instances]
        ctx.tally.add(step, "instance", "kept", n=len(kept))
        for inst in kept:
            ctx.emit(
                instruction=cand.instruction,
                input=inst.input,
                output=inst.output,
                round_=step,
                operation="output_first" if cand.is_classification else "input_first",
                parent_id=None,
                request=cand.request,
                extra={
                    "is_classification": cand.is_classification,
                    "instance_prompt_hash": ctx.client.key(request),
                    "filter_scores": {"rouge_l_max": cand.novelty.max_score},
                    "most_similar": [
                        {"instruction": s.text, "rouge_l": s.score}
                        for s in cand.novelty.most_similar
                    ],
                },
            )


def _instance_prompt(ctx: SynthContext, seeds: list[SeedTask], cand: Candidate) -> str:
    same_kind = [
        s for s in seeds if bool(s.is_classification) == cand.is_classification and s.instances
    ] or [s for s in seeds if s.instances]
    examples = ctx.rng.sample(same_kind, min(_INSTANCE_EXAMPLES, len(same_kind)))
    name = "self_instruct_output_first" if cand.is_classification else "self_instruct_input_first"
    return ctx.prompts.render(
        name,
        examples=examples,
        instruction=cand.instruction,
        max_instances=ctx.cfg.self_instruct.max_instances,
    )
