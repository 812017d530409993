"""Held-out VQA accuracy at every SFT evaluation, overall and per question type: the learning curve the eval loss
alone does not show (a model can lower the loss by learning the answer prior of each question type).

TRL's `SFTTrainer` evaluates the loss only, and transformers' generation-based evaluation (`predict_with_generate`)
belongs to the seq2seq trainer, so `VQASFTTrainer.evaluate` adds greedy answers scored with the official metric.
Questions are shared over the ranks and gathered back (`vlm/eval/sharding.py`, as in PPO's held-out evaluation); the
metrics are logged beside `eval_loss` (TensorBoard, trainer_state.json).
"""

from __future__ import annotations

from datasets import Dataset
from trl import SFTTrainer
from trl.models.utils import unwrap_model_for_generation

from vlm.eval.sharding import gather_by_row, rank_share
from vlm.eval.vqa import score_predictions
from vlm.model.generation import generate_answers
from vlm.training.feature_bank import FeatureBank, image_inputs

PREFIX = "vqa_accuracy"


def metric_name(question_type: str | None = None) -> str:
    """`vqa_accuracy`, or `vqa_accuracy/<question type with underscores>` (one TensorBoard chart each)."""
    return PREFIX if question_type is None else f"{PREFIX}/{question_type.replace(' ', '_')}"


class VQACurve:
    """Called with the trainer at each evaluation: `{metric name: accuracy}` over the held-out questions `vqa`
    (a `load_vqa` split; images from the feature `bank` when the tower's features are cached)."""

    def __init__(self, vqa: Dataset, bank: FeatureBank | None, max_new_tokens: int = 8, batch_size: int = 128):
        self.vqa, self.bank = vqa, bank
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __call__(self, trainer: SFTTrainer) -> dict:
        acc = trainer.accelerator
        index = rank_share(len(self.vqa), acc)
        rows = self.vqa.select(index)
        images = image_inputs(rows["image_path"], (f"question_id {q}" for q in rows["question_id"]), self.bank)
        with unwrap_model_for_generation(trainer.model_wrapped, acc) as model:
            was_training = model.training
            model.eval()
            answers = generate_answers(
                model, trainer.processing_class, images, rows["question"], self.max_new_tokens, self.batch_size
            )
            model.train(was_training)
        answer_of = gather_by_row(index, answers)
        predictions = [{"question_id": q, "answer": answer_of[i]} for i, q in enumerate(self.vqa["question_id"])]
        scored = score_predictions(predictions, self.vqa)  # the official metric, as `vlm-rlhf eval` scores
        metrics = {metric_name(): scored["accuracy"]}
        metrics.update({metric_name(t): a for t, a in scored["accuracy_by_question_type"].items()})
        return metrics


class VQASFTTrainer(SFTTrainer):
    """`SFTTrainer` whose evaluation also answers the held-out questions (`vqa_curve`; None: the loss only)."""

    def __init__(self, *args, vqa_curve: VQACurve | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.vqa_curve = vqa_curve

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.vqa_curve is not None and eval_dataset is None:
            vqa = {f"{metric_key_prefix}_{k}": round(v, 4) for k, v in self.vqa_curve(self).items()}
            self.log(vqa)
            metrics.update(vqa)
        return metrics


def vqa_curve_points(log_history: list[dict], prefix: str = "eval") -> list[dict]:
    """`[{"step", "vqa_accuracy", "<question type>": accuracy, ...}]` from the trainer's log history."""
    head = f"{prefix}_{PREFIX}"
    points = []
    for entry in log_history:
        if head in entry:
            point = {"step": entry["step"], PREFIX: entry[head]}
            point.update(
                {k[len(head) + 1 :].replace("_", " "): v for k, v in entry.items() if k.startswith(head + "/")}
            )
            points.append(point)
    return points
