"""Platt scaling for `VLMForAnswerLikelihood` before it is fine-tuned: the two weights of its `likelihood_head`
(logit = a * log-likelihood + b) fitted by weighted logistic regression on the training labels.

Why before training: a and b are two of millions of parameters, and at a fine-tuning learning rate (1e-4) they
would move by ~0.02 over a demo's few hundred steps, leaving the logit the raw log-likelihood (never above 0, so
P(correct) never above 0.5): a badly calibrated start whose loss would push every answer's likelihood around.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlm.model.reward_scoring import score_answers
from vlm.training.feature_bank import image_inputs


def fit_logistic(x: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, pos_weight: float | None):
    """(a, b) minimising the weighted BCE of a * x + b against `labels` (the training loss itself, summed) plus a
    Gaussian prior a ~ N(1, 1), b ~ N(0, 10^2), by L-BFGS. The prior only matters for a few labels: labels that
    the log-likelihood separates would otherwise send a to infinity (on thousands of labels it moves a by < 0.01)."""
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    x, labels, weights = x.double(), labels.double(), weights.double()
    pos = None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float64)
    optimizer = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = params[0] * x + params[1]
        loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos, reduction="none")
        loss = (loss * weights).sum() + 0.5 * (params[0] - 1) ** 2 + 0.5 * (params[1] / 10) ** 2
        loss.backward()
        return loss

    optimizer.step(closure)
    a, b = params.detach().tolist()
    return a, b


@torch.no_grad()
def fit_likelihood_head(model, processor, train_rows: list[dict], bank, pos_weight, batch_size: int) -> dict:
    """Score the training answers' log-likelihoods once, fit a and b, write them into the head; returns them."""
    images = image_inputs([r["image"] for r in train_rows], (f"answer {r['answer_id']}" for r in train_rows), bank)
    head = model.likelihood_head
    head.weight.fill_(1.0)
    head.bias.zero_()
    was_training = model.training
    model.eval()
    x = score_answers(
        model, processor, images, [r["question"] for r in train_rows], [r["answer"] for r in train_rows], batch_size
    )
    model.train(was_training)
    labels = torch.tensor([float(r["label"]) for r in train_rows])
    weights = torch.tensor([float(r["weight"]) for r in train_rows])
    a, b = fit_logistic(x, labels, weights, pos_weight)
    head.weight.fill_(a)
    head.bias.fill_(b)
    return {"scale": a, "bias": b}
