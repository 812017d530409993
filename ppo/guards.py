"""Guard rails of PPO's own loop: rollout and training log-probs that disagree, a negative KL (collapsed answers:
`vlm.training.guards`, shared with GRPO). Every rank sees the same gathered numbers, so all stop together."""

from __future__ import annotations


def ratio_problem(deviation: float, tolerance: float) -> str | None:
    if deviation > tolerance:
        return (
            f"the probability ratio at the first minibatch of the update is off by {deviation:.3g} (tolerance "
            f"{tolerance}): the training forward does not reproduce the rollout's log-probs (images paired with "
            "the wrong rows, a logits processor in generation, or a dtype mismatch)"
        )
    return None


def kl_problem(kl: float, tolerance: float) -> str | None:
    if kl < -tolerance:
        return (
            f"objective/kl is {kl:.3g}, below -{tolerance}: the sampled answers are likelier under the reference "
            "than under the policy that sampled them, so the KL estimate is broken (sampling settings differ)"
        )
    return None
