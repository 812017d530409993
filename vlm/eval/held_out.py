"""Held-out evaluation during RL (PPO and GRPO): greedy answers to held-out VQA questions, scored three ways: VQA
accuracy (official metric), the reward's mean score, and the exact KL to the reference on those answers. The same
functions as `vlm-rlhf eval` (`generate_answers`, `answer_kl`).

Questions are shared over the ranks in equal shares and gathered back by row (`vlm/eval/sharding.py`), so every
rank makes the same number of model calls, as ZeRO-3 needs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from datasets import Dataset

from vlm.eval.answer_kl import answer_kl
from vlm.eval.metrics import vqa_accuracy
from vlm.eval.sharding import gather_by_row, rank_share
from vlm.model.generation import generate_answers


def held_out_metrics(
    accelerator,
    policy,
    processor,
    vqa: Dataset,
    images_of: Callable[[Dataset], list],
    score: Callable[[list[int], list, list[str], list[str]], torch.Tensor],
    reference=None,
    reference_context=nullcontext,
    kl_coef: float = 0.0,
    max_new_tokens: int = 8,
    batch_size: int = 64,
) -> dict:
    """`{"vqa_accuracy", "reward", "kl", "rlhf_reward", "questions"}` of `policy` on `vqa` (a `load_vqa` split with
    answers). `images_of(rows)`: what the processor takes as the rows' images; `score(index, images, questions,
    answers)`: the reward of each answer; `reference` (default: `policy` under `reference_context()`, e.g. a LoRA
    policy with its adapter disabled)."""
    index = rank_share(len(vqa), accelerator)
    rows = vqa.select(index)
    images, questions = images_of(rows), rows["question"]
    answers = generate_answers(policy, processor, images, questions, max_new_tokens, batch_size)
    rewards = score(index, images, questions, answers).float().cpu()
    kl = answer_kl(
        policy,
        reference or policy,
        processor,
        images,
        questions,
        answers,
        batch_size,
        reference_context=reference_context,
    )
    accuracy = [vqa_accuracy(a, human) for a, human in zip(answers, rows["answers"])]
    unique = gather_by_row(index, list(zip(accuracy, rewards.tolist(), kl.tolist())))
    values = torch.tensor(list(unique.values()), dtype=torch.float64)
    reward, kl = values[:, 1].mean().item(), values[:, 2].mean().item()
    return {
        "vqa_accuracy": values[:, 0].mean().item(),
        "reward": reward,
        "kl": kl,
        "rlhf_reward": reward - kl_coef * kl,  # TRL's objective/rlhf_reward: score - kl_coef * KL
        "questions": len(unique),
    }
