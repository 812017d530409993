"""GRPO prompts: each VQA question as a one-turn conversation with its image, the way TRL's `GRPOTrainer` takes
vision-language prompts (`prompt` + `image` columns; trl/trainer/grpo_trainer.py `_generate_and_score_completions`).

The trainer renders the turn with `VQA_TEMPLATE`, so the policy reads exactly the `Q: <image> {question} A:` ids it
was trained on. The `image` of a row is read when the row is: its cached tower features `[N, D]` (a frozen tower) or
the decoded picture, so no image is held in memory twice. The other columns (question, answers, ...) reach the
reward functions as keyword arguments.
"""

from __future__ import annotations

from datasets import Dataset

from vlm.training.feature_bank import FeatureBank, image_inputs


def vqa_conversation(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def prompt_dataset(vqa: Dataset, bank: FeatureBank | None) -> Dataset:
    """`vqa` (a `load_vqa` split) with a conversational `prompt` per question and, read on access, its `image`."""
    prompts = vqa.map(lambda row: {"prompt": vqa_conversation(row["question"])}, desc="prompts")

    def with_image(batch: dict) -> dict:
        records = (f"question_id {q}" for q in batch["question_id"])
        return {**batch, "image": image_inputs(batch["image_path"], records, bank)}

    return prompts.with_transform(with_image)
