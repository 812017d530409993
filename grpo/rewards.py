"""The rewards GRPO can optimise, as TRL reward functions (`f(prompts, completions, **dataset columns) -> floats`):
the project's image reward model, and the VQA accuracy of the answer where the question's answers are known (the
oracle, the ground-truth bonus, or at weight 0 the over-optimisation watch).

TRL's own model-based reward only ever sees the tokenized text (trl/trainer/grpo_trainer.py `_calculate_rewards`),
so the reward model, which must see the image, is called here as a function with the row's image, through the
core's `score_answers`: the same inputs and read-out it was trained on.
"""

from __future__ import annotations

from vlm.eval.metrics import vqa_accuracy
from vlm.model.reward_scoring import score_answers


def answer_text(completion) -> str:
    """The answer as users read it (conversational or plain completion): first line, stripped, as
    `vlm.model.generation` cuts greedy answers."""
    text = completion[0]["content"] if isinstance(completion, list) else completion
    return text.split("\n")[0].strip()


def vqa_accuracy_reward(completions, answers, **_) -> list[float]:
    """Official VQA accuracy of each sampled answer against its question's human answers."""
    return [vqa_accuracy(answer_text(c), human) for c, human in zip(completions, answers, strict=True)]


vqa_accuracy_reward.__name__ = "vqa_accuracy"  # TRL logs each reward as rewards/<__name__>/mean


class RewardModelScore:
    """The reward model's logit of each (image, question, sampled answer)."""

    __name__ = "reward_model"

    def __init__(self, model, processor, batch_size: int = 64):
        self.model, self.processor, self.batch_size = model, processor, batch_size

    def __call__(self, completions, image, question, **_) -> list[float]:
        answers = [answer_text(c) for c in completions]
        return score_answers(self.model, self.processor, image, question, answers, self.batch_size).tolist()
