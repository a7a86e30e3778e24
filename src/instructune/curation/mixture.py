"""The train mixture: examples-proportional with caps, explicit weights or counts (seeded).

Each source asks for one of: everything (no key), `max_examples` (FLAN's examples-proportional
mixing: min(size, cap)), `count` (exactly that many rows), or `weight` (that share of the final
mix). Sources with a weight share what the others leave: with fixed sizes F and weights summing
to W < 1 the mix has F / (1 - W) rows; when every source has a weight the mix is the largest one
that needs no upsampling. A target above a source's size repeats whole passes, then samples the
remainder; below it samples without replacement. Sampling keeps file order within a source; the
final mix is shuffled. Everything is seeded, so the same config gives the same bytes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from instructune.config.build import BuildSource
from instructune.curation.render import Example
from instructune.data.conversation import DataError

__all__ = ["MixRow", "mix"]


@dataclass(frozen=True, slots=True)
class MixRow:
    source: str
    available: int
    requested: str
    requested_share: float | None
    realised: int
    realised_share: float

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "available": self.available,
            "requested": self.requested,
            "requested_share": self.requested_share,
            "realised": self.realised,
            "realised_share": self.realised_share,
        }


def mix(
    rows: dict[str, list[Example]], sources: list[BuildSource], seed: int
) -> tuple[list[Example], list[MixRow]]:
    targets = _targets(rows, sources)
    mixed: list[Example] = []
    for source in sources:
        rng = random.Random(f"{seed}/mix/{source.name}")
        mixed.extend(_take(rows[source.name], targets[source.name], rng))
    random.Random(f"{seed}/mix").shuffle(mixed)
    total = len(mixed) or 1
    report = [
        MixRow(
            s.name,
            len(rows[s.name]),
            _requested(s),
            s.weight if s.weight is not None else None,
            targets[s.name],
            targets[s.name] / total,
        )
        for s in sources
    ]
    return mixed, report


def _requested(source: BuildSource) -> str:
    if source.weight is not None:
        return f"weight {source.weight:g}"
    if source.count is not None:
        return f"count {source.count}"
    if source.max_examples is not None:
        return f"cap {source.max_examples}"
    return "all"


def _targets(rows: dict[str, list[Example]], sources: list[BuildSource]) -> dict[str, int]:
    for s in sources:
        if not rows[s.name] and (s.count or s.weight):
            raise DataError(
                f"source {s.name!r}: no train rows left after the split and filters, so "
                f"its {_requested(s)} can't be met"
            )
    fixed: dict[str, int] = {}
    for s in sources:
        if s.weight is None:
            size = len(rows[s.name])
            fixed[s.name] = s.count if s.count is not None else min(size, s.max_examples or size)
    weighted = [s for s in sources if s.weight is not None]
    if not weighted:
        return fixed
    total_weight = sum(s.weight or 0.0 for s in weighted)
    if not fixed:
        scale = min(len(rows[s.name]) / ((s.weight or 0.0) / total_weight) for s in weighted)
        return {s.name: round((s.weight or 0.0) / total_weight * scale) for s in weighted}
    if total_weight >= 1.0:
        raise DataError(
            f"build.sources: weights add up to {total_weight:g}, leaving no room for the "
            f"sources without one ({', '.join(fixed)}); lower the weights or weight every source"
        )
    total = sum(fixed.values()) / (1.0 - total_weight)
    return {**fixed, **{s.name: round((s.weight or 0.0) * total) for s in weighted}}


def _take(rows: list[Example], target: int, rng: random.Random) -> list[Example]:
    if target == 0 or not rows:
        return []
    passes, remainder = divmod(target, len(rows))
    picked = sorted(rng.sample(range(len(rows)), remainder))
    return rows * passes + [rows[i] for i in picked]
