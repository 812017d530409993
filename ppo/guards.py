"""Guard rails that stop a PPO run before it wastes compute or ruins the policy: rollout and training log-probs
that disagree, a negative KL, collapsed answers. Every rank sees the same gathered numbers, so all stop together."""

from __future__ import annotations

from vlm.errors import CommandError


class TrainingStopped(CommandError, RuntimeError):
    """A guard fired; the message says which, with the numbers, and names the last good checkpoint."""


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


def collapse_problem(answers: list[str], mean_length: float, start_length: float | None, factor: float) -> str | None:
    if len(answers) >= 4 and len(set(answers)) == 1:
        return f"every answer of the update is {answers[0]!r}: the policy collapsed onto one answer"
    if start_length and not start_length / factor <= mean_length <= start_length * factor:
        return (
            f"mean answer length is {mean_length:.2f} tokens, outside [{start_length / factor:.2f}, "
            f"{start_length * factor:.2f}] around the starting policy's {start_length:.2f}: the answers collapsed"
        )
    return None
