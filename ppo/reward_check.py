"""The reward model checked before PPO trains against it: best-of-n on training prompts with known answers
(`vlm.eval.best_of_n`). PPO moves the policy towards what the reward model prefers among its own samples; if the
reward model's pick of n samples is less often right than greedy decoding, that is the direction it would teach."""

from __future__ import annotations

import logging
import random

import torch

from vlm.errors import CommandError
from vlm.eval.best_of_n import best_of_n

logger = logging.getLogger(__name__)


class RewardModelRefused(CommandError, ValueError):
    """The reward model ranks the policy's answers worse than greedy decoding does."""


def check_reward_model(trainer, processor) -> dict | None:
    """Best-of-n figures of the trainer's reward model on `reward_check_questions` training prompts (a seeded
    draw), refusing or warning when its pick is below greedy; None when off, resuming, without a reward model or
    without known answers. Every rank computes the same figures (same seed, same models), so all stop alike."""
    args = trainer.args
    if args.reward_check == "off" or trainer.reward_model is None:
        return None
    if args.resume and trainer.checkpoint_dirs():  # checked when the run started
        return None
    vqa = trainer.vqa
    if "answers" not in vqa.column_names:
        logger.info("reward check skipped: the prompts (%s) have no known answers", args.train_split)
        return None
    rows = random.Random(args.seed).sample(range(len(vqa)), min(args.reward_check_questions, len(vqa)))
    picked = vqa.select(rows)
    torch.manual_seed(args.seed)
    policy = trainer.policy()
    was_training = policy.training
    policy.eval()
    figures = best_of_n(
        policy,
        processor,
        trainer.reward_model,
        processor,  # same tokenizer and image tokens: `vlm.model.reward_scoring.load_scorer` checked
        trainer.store.images(picked["image_path"]),
        picked["question"],
        picked["answers"],
        n=args.reward_check_samples,
        temperature=args.temperature,
        max_new_tokens=args.response_length,
        batch_size=args.local_rollout_forward_batch_size,
    )
    policy.train(was_training)
    said = (
        f"best-of-{figures['n']} by the reward model {figures['best_of_n_by_reward']:.1%} against greedy "
        f"{figures['greedy']:.1%} (a random sample {figures['random_sample']:.1%}, the truth's pick "
        f"{figures['best_of_n_by_truth']:.1%}; pair accuracy {figures['pair_accuracy']:.1%}) on "
        f"{figures['questions']} training prompts"
    )
    if figures["best_of_n_by_reward"] >= figures["greedy"]:
        logger.info("reward check: %s", said)
        return figures
    problem = f"the reward model {args.reward_model_path} picks answers worse than greedy decoding: {said}"
    if args.reward_check == "refuse":
        raise RewardModelRefused(
            f"{problem}; PPO would teach the policy to be worse. Train a better reward model, or set "
            "reward_check: warn to train anyway"
        )
    logger.warning("%s; PPO may teach the policy to be worse", problem)
    return figures
