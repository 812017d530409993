"""The guard rails both RL stages share: a run whose answers collapsed (every answer the same, or a mean length far
from the start's) is stopped with one line that says why, before it wastes compute or ruins the policy."""

from __future__ import annotations

from vlm.errors import CommandError


class TrainingStopped(CommandError, RuntimeError):
    """A guard fired; the message says which, with the numbers, and names the last good checkpoint."""


def collapse_problem(answers: list[str], mean_length: float, start_length: float | None, factor: float) -> str | None:
    if len(answers) >= 4 and len(set(answers)) == 1:
        return f"every answer of the update is {answers[0]!r}: the policy collapsed onto one answer"
    if start_length and not start_length / factor <= mean_length <= start_length * factor:
        return (
            f"mean answer length is {mean_length:.2f} tokens, outside [{start_length / factor:.2f}, "
            f"{start_length * factor:.2f}] around the starting policy's {start_length:.2f}: the answers collapsed"
        )
    return None
