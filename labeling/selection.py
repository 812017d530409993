"""Which sampled answers to spend the label budget on: `label generate --select ... --budget N --pool M`.

- `uncertainty`: the answers whose current reward-model P(correct) is nearest 0.5 (needs `p_correct`);
- `disagreement`: answers to the questions whose sampled answers disagree most (entropy of the samples' answer
  distribution), for the first round, before any reward model exists;
- `random`: a seeded draw.

On top of the N chosen, a random slice of the rest (`random_fraction` x N) is kept and marked
`selection: random-slice`: labels an active strategy did not pick, for an unbiased estimate of the reward model.
Ties are broken by a seeded draw, so a selection is deterministic for a seed.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

STRATEGIES = ("random", "uncertainty", "disagreement")


def question_entropy(records: list[dict]) -> dict[int, float]:
    """Entropy (nats) of each question's sampled answers, from the merged records' `count`s."""
    counts: dict[int, list[int]] = defaultdict(list)
    for r in records:
        counts[r["question_id"]].append(r.get("count", 1))
    entropy = {}
    for question, cs in counts.items():
        total = sum(cs)
        entropy[question] = -sum(c / total * math.log(c / total) for c in cs)
    return entropy


def select_answers(
    records: list[dict], strategy: str, budget: int, random_fraction: float = 0.1, seed: int = 0
) -> list[dict]:
    """`budget` records chosen by `strategy` plus round(random_fraction x budget) random others, each a copy with
    `selection` set; fewer only when the pool holds fewer records."""
    if strategy not in STRATEGIES:
        raise ValueError(f"select must be one of {STRATEGIES}, got {strategy!r}")
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    rng = random.Random(f"select:{seed}")
    tiebreak = {r["answer_id"]: rng.random() for r in records}
    if strategy == "uncertainty":
        unscored = [r["answer_id"] for r in records if r.get("p_correct") is None]
        if unscored:
            raise ValueError(f"uncertainty selection needs reward-model scores; answer {unscored[0]} has none")
        ranked = sorted(records, key=lambda r: (abs(r["p_correct"] - 0.5), tiebreak[r["answer_id"]]))
    elif strategy == "disagreement":
        entropy = question_entropy(records)
        ranked = sorted(records, key=lambda r: (-entropy[r["question_id"]], tiebreak[r["answer_id"]]))
    else:
        ranked = sorted(records, key=lambda r: tiebreak[r["answer_id"]])
    chosen = [dict(r, selection=strategy) for r in ranked[:budget]]
    rest = ranked[budget:]
    extra = rng.sample(rest, min(len(rest), round(random_fraction * budget)))
    return chosen + [dict(r, selection="random-slice") for r in extra]
