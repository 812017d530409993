"""The loop the stages of the demo's base train with (`vlm-rlhf pretrain-base`): AdamW, transformers' warm-up +
cosine (or constant) schedule, and a loss curve of means over `log_every` steps.

Written by hand rather than on the Trainer: the tower's stage draws fresh scenes every step and the later stages
read tower features held in memory, so there is no dataset to iterate, no checkpoint to resume (a build
takes minutes and is written whole or not at all), and the loop runs unchanged on CPU and CUDA.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from transformers import get_scheduler

logger = logging.getLogger(__name__)


def fit(
    step_loss: Callable[[int], torch.Tensor | None],
    params: list[torch.nn.Parameter],
    steps: int,
    learning_rate: float,
    warmup_steps: int,
    name: str,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = None,
    log_every: int | None = None,
    schedule: str = "cosine",
) -> list[dict]:
    """Run up to `steps` optimizer steps on `step_loss(step)`; return the loss curve, `[{"step", "loss"}]`. A
    `step_loss` that returns None ends the run there (a stage whose length depends on what it has learned).
    `schedule`: "cosine" (warm-up, then cosine to zero) or "constant" (warm-up, then flat), transformers' schedules."""
    log_every = log_every or min(250, max(1, steps // 10))  # ten points of the loss curve at least
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    scheduler = get_scheduler(
        "cosine" if schedule == "cosine" else "constant_with_warmup", optimizer, warmup_steps, steps
    )
    losses, curve = [], []
    for step in range(steps):
        loss = step_loss(step)
        if loss is None:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            curve.append({"step": step + 1, "loss": round(float(np.mean(losses[-log_every:])), 4)})
            logger.info("%s: step %d/%d, loss %.3f", name, step + 1, steps, curve[-1]["loss"])
    if losses and (not curve or curve[-1]["step"] != len(losses)):  # a run ended early: its last, shorter stretch
        tail = len(losses) - (curve[-1]["step"] if curve else 0)
        curve.append({"step": len(losses), "loss": round(float(np.mean(losses[-tail:])), 4)})
    return curve
