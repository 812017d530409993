"""VQA questions as TRL prompt-completion rows, with the image attached per batch (decoded, or cached features).

Rows keep only a reference to their image (`image_path`, found in a `FeatureBank` when features are cached);
`AttachImages`, a `Dataset.with_transform` hook, adds `images` when a batch is read, so neither pixels
nor features are copied into the dataset. TRL's vision collator then builds the batch unchanged.
"""

from __future__ import annotations

import random

from datasets import Dataset

from vlm.eval.metrics import normalize_answer
from vlm.model.generation import vqa_prompt
from vlm.training.feature_bank import FeatureBank, image_inputs


def vqa_sft_rows(vqa: Dataset, eos_token: str) -> Dataset:
    """prompt `Q: <image> {question} A:`, completion ` {multiple_choice_answer}{eos}`, and the normalised human
    answers (for `answer: sample`)."""

    def to_row(r):
        human = sorted({normalize_answer(a) for a in r["answers"]} - {""}) or [r["multiple_choice_answer"]]
        return {
            "prompt": vqa_prompt(r["question"]),
            "completion": f" {r['multiple_choice_answer']}{eos_token}",
            "human_answers": human,
        }

    keep = {"question_id", "image_path"}
    return vqa.map(to_row, remove_columns=[c for c in vqa.column_names if c not in keep])


class AttachImages:
    """Adds `images` to a batch of rows: `[PIL image]` per row, or `[features]` from a bank (which the processor
    accepts in place of an image). With `sample_answers`, the completion is one of the human answers, drawn anew
    each time the row is read."""

    def __init__(self, eos_token: str, bank: FeatureBank | None = None, sample_answers: bool = False, seed: int = 0):
        self.eos_token = eos_token
        self.bank = bank
        self.sample_answers = sample_answers
        self.rng = random.Random(seed)

    def __call__(self, batch: dict) -> dict:
        records = (f"question_id {qid}" for qid in batch["question_id"])
        images = [[image] for image in image_inputs(batch["image_path"], records, self.bank)]
        completions = batch["completion"]
        if self.sample_answers:
            completions = [f" {self.rng.choice(answers)}{self.eos_token}" for answers in batch["human_answers"]]
        return {
            "question_id": batch["question_id"],
            "prompt": batch["prompt"],
            "completion": completions,
            "images": images,
        }


def with_images(rows: Dataset, attach: AttachImages) -> Dataset:
    return rows.with_transform(attach)
