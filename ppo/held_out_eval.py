"""Held-out evaluation during PPO: greedy answers to held-out VQA questions, scored three ways: VQA accuracy
(official metric), the reward model's mean score, and the exact KL to the reference on those answers. The same
functions as `vlm-rlhf eval` (`answer_questions`, `score_answers`, `answer_kl`), on the cached features.

Questions are shared over the ranks in equal shares and gathered back by row (`vlm/eval/sharding.py`), so every
rank makes the same number of model calls, as ZeRO-3 needs.
"""

from __future__ import annotations

import torch
from trl.models.utils import unwrap_model_for_generation

from vlm.eval.answer_kl import answer_kl
from vlm.eval.metrics import vqa_accuracy
from vlm.eval.sharding import gather_by_row, rank_share
from vlm.model.generation import generate_answers
from vlm.model.reward_scoring import score_answers


class HeldOutEvaluation:
    def __init__(self, vqa, store, max_new_tokens: int, batch_size: int = 64):
        self.vqa, self.store = vqa, store
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __call__(self, trainer) -> dict:
        acc, processor = trainer.accelerator, trainer.processing_class
        index = rank_share(len(self.vqa), acc)
        rows = self.vqa.select(index)
        images = self.store.images(rows["image_path"])
        questions = rows["question"]
        with unwrap_model_for_generation(
            trainer.model, acc, gather_deepspeed3_params=trainer.args.ds3_gather_for_generation
        ) as unwrapped:
            policy = unwrapped.policy
            answers = generate_answers(policy, processor, images, questions, self.max_new_tokens, self.batch_size)
            if trainer.reward_model is not None:
                rewards = score_answers(trainer.reward_model, processor, images, questions, answers, self.batch_size)
            else:
                rewards = trainer.reward_fn([self.vqa[i] for i in index], answers).float().cpu()
            kl = answer_kl(
                policy,
                trainer.ref_model or policy,
                processor,
                images,
                questions,
                answers,
                self.batch_size,
                reference_context=trainer.reference_context,
            )
        accuracy = [vqa_accuracy(a, human) for a, human in zip(answers, rows["answers"])]
        unique = gather_by_row(index, list(zip(accuracy, rewards.tolist(), kl.tolist())))
        values = torch.tensor(list(unique.values()), dtype=torch.float64)
        reward, kl = values[:, 1].mean().item(), values[:, 2].mean().item()
        return {
            "vqa_accuracy": values[:, 0].mean().item(),
            "reward": reward,
            "kl": kl,
            "rlhf_reward": reward - trainer.args.kl_coef * kl,  # TRL's objective/rlhf_reward: score - kl_coef * KL
            "questions": len(unique),
        }
