"""The reward model's batches and losses on `transformers.Trainer`.

Written here because TRL's `RewardTrainer` is pairwise-only and text-only: the pointwise loss is binary
cross-entropy on correct (1) / incorrect (0) with per-answer weights (annotator agreement) and an optional
`pos_weight` for class balance; the pairwise loss is Bradley-Terry, -log σ(r_chosen - r_rejected), as TRL's
`RewardTrainer` computes it (trl/trainer/reward_trainer.py), weighted per pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer

from vlm.model.reward_scoring import reward_inputs
from vlm.training.feature_bank import FeatureBank, image_inputs


class RewardCollator:
    """Rows → model inputs. Pointwise rows: image, question, answer, label, weight. Pairwise rows: image, question,
    chosen, rejected, weight; the batch holds all chosen texts, then all rejected ones. An image comes from a
    `FeatureBank` (cached features) or is decoded from its path."""

    def __init__(self, processor, objective: str, bank: FeatureBank | None = None):
        self.processor = processor
        self.objective = objective
        self.bank = bank

    def __call__(self, rows: list[dict]) -> dict:
        images = image_inputs([r["image"] for r in rows], (f"question {r['question']!r}" for r in rows), self.bank)
        questions = [r["question"] for r in rows]
        weights = torch.tensor([float(r["weight"]) for r in rows])
        if self.objective == "pairwise":
            answers = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
            batch = reward_inputs(self.processor, images + images, questions + questions, answers)
        else:
            batch = reward_inputs(self.processor, images, questions, [r["answer"] for r in rows])
            batch["labels"] = torch.tensor([float(r["label"]) for r in rows])
        batch["weights"] = weights
        return dict(batch)


class RewardModelTrainer(Trainer):
    def __init__(self, *args, objective: str = "pointwise", pos_weight: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.pos_weight = pos_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("weights")
        labels = inputs.pop("labels", None)
        outputs = model(**inputs)
        logits = outputs.logits[:, 0].float()
        if self.objective == "pairwise":
            chosen, rejected = logits.chunk(2)
            per_item = -F.logsigmoid(chosen - rejected)
        else:
            pos_weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
            per_item = F.binary_cross_entropy_with_logits(
                logits, labels.to(logits.device), pos_weight=pos_weight, reduction="none"
            )
        weights = weights.to(per_item.device)
        loss = (per_item * weights).sum() / weights.sum().clamp_min(1e-8)
        return (loss, outputs) if return_outputs else loss
