"""Which sampled answers to spend the label budget on: `label generate --select ... --budget N --pool M`.

`select_by: question` (default) chooses whole questions, every distinct sampled answer of each: a reward model
that PPO can use must rank the answers to one question, and it learns that from labels on several answers to the
same question (both a correct and an incorrect one). `select_by: answer` chooses single answers.

- `uncertainty`: by question, the questions whose answers' reward-model P(correct) are least sure, summed over the
  answers (binary entropy; several uncertain answers beat one); by answer, P(correct) nearest 0.5 (needs
  `p_correct`);
- `disagreement`: the questions whose sampled answers disagree most (entropy of the samples' answer distribution),
  for the first round, before any reward model exists;
- `random`: a seeded draw (of questions, or of answers).

Questions are taken whole while they fit the budget of N answers. On top, a random slice of the rest (about
`random_fraction` x N answers, in the same unit) is kept and marked `selection: random-slice`: labels an active
strategy did not pick, for an unbiased estimate of the reward model. Ties are broken by a seeded draw, so a
selection is deterministic for a seed.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

STRATEGIES = ("random", "uncertainty", "disagreement")
UNITS = ("question", "answer")


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


def _binary_entropy(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return -p * math.log(p) - (1 - p) * math.log(1 - p)


def _ranked_answers(records: list[dict], strategy: str, tiebreak: dict) -> list[dict]:
    if strategy == "uncertainty":
        return sorted(records, key=lambda r: (abs(r["p_correct"] - 0.5), tiebreak[r["answer_id"]]))
    if strategy == "disagreement":
        entropy = question_entropy(records)
        return sorted(records, key=lambda r: (-entropy[r["question_id"]], tiebreak[r["answer_id"]]))
    return sorted(records, key=lambda r: tiebreak[r["answer_id"]])


def _ranked_questions(records: list[dict], strategy: str, tiebreak: dict) -> list[list[dict]]:
    groups: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["question_id"]].append(r)
    if strategy == "uncertainty":
        worth = {q: sum(_binary_entropy(r["p_correct"]) for r in g) for q, g in groups.items()}
    elif strategy == "disagreement":
        worth = question_entropy(records)
    else:
        worth = dict.fromkeys(groups, 0.0)
    return [groups[q] for q in sorted(groups, key=lambda q: (-worth[q], tiebreak[q]))]


def _fill(groups: list[list[dict]], budget: int) -> tuple[list[list[dict]], list[list[dict]]]:
    """Whole groups in order while they fit `budget` records; (taken, the rest)."""
    taken, rest, used = [], [], 0
    for g in groups:
        if used + len(g) <= budget:
            taken.append(g)
            used += len(g)
        else:
            rest.append(g)
    return taken, rest


def select_answers(
    records: list[dict],
    strategy: str,
    budget: int,
    random_fraction: float = 0.1,
    seed: int = 0,
    unit: str = "question",
) -> list[dict]:
    """About `budget` records chosen by `strategy` in `unit`s (whole questions fill it up to the last one that
    fits) plus about random_fraction x budget random others, each a copy with `selection` set."""
    if strategy not in STRATEGIES:
        raise ValueError(f"select must be one of {STRATEGIES}, got {strategy!r}")
    if unit not in UNITS:
        raise ValueError(f"select_by must be one of {UNITS}, got {unit!r}")
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    if strategy == "uncertainty":
        unscored = [r["answer_id"] for r in records if r.get("p_correct") is None]
        if unscored:
            raise ValueError(f"uncertainty selection needs reward-model scores; answer {unscored[0]} has none")
    rng = random.Random(f"select:{seed}")
    if unit == "question":
        tiebreak = {q: rng.random() for q in sorted({r["question_id"] for r in records})}
        chosen, rest = _fill(_ranked_questions(records, strategy, tiebreak), budget)
        rng.shuffle(rest)
        extra, _ = _fill(rest, round(random_fraction * budget))
        chosen, extra = [r for g in chosen for r in g], [r for g in extra for r in g]
    else:
        tiebreak = {r["answer_id"]: rng.random() for r in records}
        ranked = _ranked_answers(records, strategy, tiebreak)
        chosen, rest = ranked[:budget], ranked[budget:]
        extra = rng.sample(rest, min(len(rest), round(random_fraction * budget)))
    return [dict(r, selection=strategy) for r in chosen] + [dict(r, selection="random-slice") for r in extra]
