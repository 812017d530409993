"""Per-token advantages of one rollout: TRL's PPO (GAE on the value model) or TRL's RLOO (a group baseline).

Both take the rollout's per-token KL penalty and its per-answer score; both return `(advantages, returns)`, whitened
over the valid tokens of the batch.
"""

from __future__ import annotations

import torch
from trl.experimental.ppo.ppo_trainer import masked_whiten


def gae(
    non_score_reward, scores, values, sequence_lengths, padding_mask, padding_mask_p1, gamma, lam, whiten_rewards
) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's PPO (trl 1.12, `PPOTrainer.train`): the score added after the last answer token to the per-token KL
    penalty, optional reward whitening, generalised advantage estimation on the value model's values."""
    rewards = non_score_reward.clone()
    end = torch.where(sequence_lengths + 1 < rewards.shape[1], sequence_lengths + 1, sequence_lengths)
    rewards[torch.arange(rewards.shape[0], device=rewards.device), end] += scores
    if whiten_rewards:
        rewards = masked_whiten(rewards, ~padding_mask_p1, shift_mean=False).masked_fill(padding_mask_p1, 0)
    advantages = torch.zeros_like(rewards)
    last_gae = 0.0
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages[:, t] = last_gae
    returns = advantages + values
    return masked_whiten(advantages, ~padding_mask).masked_fill(padding_mask, 0), returns


def leave_one_out(non_score_reward, scores, padding_mask, num_generations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's RLOO (trl 1.12, `RLOOTrainer._generate_and_score_completions`, after Ahmadian et al. 2024): each answer's
    score minus its summed per-token KL penalty, minus the mean of that reward over the other answers to the same
    prompt (rows come in groups of `num_generations`), given to every token of the answer. Whitened over the batch as
    the GAE path's advantages are (TRL's `normalize_advantages`). No value model: returns are zeros."""
    rewards = scores + (non_score_reward.masked_fill(padding_mask, 0)).sum(1)
    grouped = rewards.view(-1, num_generations)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (num_generations - 1)
    advantages = (grouped - baseline).reshape(-1, 1).expand_as(non_score_reward)
    advantages = masked_whiten(advantages, ~padding_mask).masked_fill(padding_mask, 0)
    return advantages, torch.zeros_like(non_score_reward)
