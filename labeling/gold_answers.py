"""Gold answers to mix among the model's: `label push --gold_rate R` and `label simulate --gold_rate R`.

For questions of the same VQA split that the model's answers do not cover, half the gold answers are the humans'
consensus answer (expected `correct`), half the consensus answer of another question of the same answer type that
no human gave here (expected `incorrect`). They are answer records shaped exactly like `label generate`'s (same
model name and sampling fields, ids from the same hash), so annotators cannot tell them apart; the expected verdicts
go to the key file beside the answers (`vlm.labels.gold`). Draws are seeded, so mixing twice gives the same gold
answers.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from vlm.data.vqa import load_vqa
from vlm.eval.metrics import vqa_accuracy
from vlm.labels.answers import answer_id
from vlm.training.feature_bank import image_key


def gold_records(records: list[dict], rate: float, seed: int = 0, threshold: float = 0.5) -> tuple[list, dict]:
    """(gold answer records, their key answer_id -> expected verdict), about `rate` x len(records) of them."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"gold_rate must be in [0, 1), got {rate}")
    wanted = round(rate * len(records))
    if wanted == 0:
        return [], {}
    sources = {(r.get("data_dir"), r.get("split")) for r in records}
    if len(sources) != 1 or None in next(iter(sources)):
        raise ValueError("gold answers need answer records from one VQA split with data_dir and split (label generate)")
    data_dir, split = next(iter(sources))
    template = records[0]
    covered = {r["question_id"] for r in records}
    questions = [q for q in load_vqa(data_dir, split, require_annotations=True) if q["question_id"] not in covered]
    if len(questions) < wanted:
        raise ValueError(f"{data_dir} {split}: only {len(questions)} questions left for {wanted} gold answers")
    by_type = defaultdict(list)
    for q in questions:
        by_type[q["answer_type"]].append(q["multiple_choice_answer"])
    rng = random.Random(f"gold:{seed}")
    gold, key = [], {}
    for q in rng.sample(questions, len(questions)):
        if len(gold) == wanted:
            break
        expected = "correct" if len(gold) % 2 == 0 else "incorrect"
        if expected == "correct":
            answer = q["multiple_choice_answer"]
            if vqa_accuracy(answer, q["answers"]) < max(threshold, 0.9):
                continue  # humans disagree: not a clear gold item
        else:
            wrong = [a for a in set(by_type[q["answer_type"]]) if vqa_accuracy(a, q["answers"]) == 0.0]
            if not wrong:
                continue
            answer = rng.choice(sorted(wrong))
        image = str(Path(q["image_path"]).resolve())
        record = {k: template.get(k) for k in ("samples", "model", "data_dir", "split", "sampling") if k in template}
        record |= {
            "answer_id": answer_id(image_key(image), q["question"], answer, template.get("model", "")),
            "image": image,
            "image_id": q["image_id"],
            "question_id": q["question_id"],
            "question": q["question"],
            "answer": answer,
            "count": 1,
            "finished": True,
        }
        gold.append(record)
        key[record["answer_id"]] = expected
    return gold, key


def mix_in(records: list[dict], gold: list[dict], seed: int = 0) -> list[dict]:
    """The model's answers with the gold ones spread among them at seeded positions (not all at the end)."""
    mixed = list(records)
    rng = random.Random(f"mix:{seed}")
    for record in gold:
        mixed.insert(rng.randint(0, len(mixed)), record)
    return mixed
