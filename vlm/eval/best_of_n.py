"""What a reward model is worth to RL, measured on questions with known answers: the policy samples n answers per
question and the reward model picks one (best-of-n). Its VQA accuracy is set beside greedy decoding, one random
sample, and the best of the n by the truth (the most any ranking of these samples can reach); and the reward model's
ranking of every two samples of one question whose VQA accuracy differs (pair accuracy) beside the spread of its
scores within and across questions. A reward model whose pick is below greedy would teach the policy to be worse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from vlm.eval.metrics import vqa_accuracy
from vlm.model.generation import answer_questions
from vlm.model.reward_scoring import score_answers


def within_question_pair_accuracy(scores: Sequence[float], truth: Sequence[float], questions: Sequence) -> tuple:
    """How often the higher score goes to the truly better of two answers to the same question, over every such
    pair whose truth differs (a tie in score counts as wrong): (accuracy, pairs); nan when there is none."""
    groups: dict = {}
    for i, q in enumerate(questions):
        groups.setdefault(q, []).append(i)
    wins = [
        (scores[i] - scores[j]) * (truth[i] - truth[j]) > 0
        for rows in groups.values()
        for k, i in enumerate(rows)
        for j in rows[k + 1 :]
        if truth[i] != truth[j]
    ]
    return (sum(wins) / len(wins) if wins else float("nan")), len(wins)


def best_of_n(
    policy,
    processor,
    reward_model,
    reward_processor,
    images: Sequence,
    questions: Sequence[str],
    human_answers: Sequence[Sequence[str]],
    n: int = 8,
    temperature: float = 1.0,
    max_new_tokens: int = 8,
    batch_size: int = 64,
) -> dict:
    """Mean VQA accuracy of greedy, a random sample, the reward model's pick of n samples and the truth's pick; the
    reward model's within-question pair accuracy (with its standard error) and score spread."""
    if n < 2:
        raise ValueError(f"best-of-n needs n >= 2 samples per question, got {n}")
    greedy = answer_questions(policy, processor, images, questions, max_new_tokens, batch_size)
    repeated = [x for x in images for _ in range(n)]
    asked = [q for q in questions for _ in range(n)]
    sampled = answer_questions(
        policy, processor, repeated, asked, max_new_tokens, batch_size, do_sample=True, temperature=temperature
    )
    texts = [a.text for a in sampled]
    scores = score_answers(reward_model, reward_processor, repeated, asked, texts, batch_size).view(-1, n)
    truth = torch.tensor([vqa_accuracy(t, human_answers[i // n]) for i, t in enumerate(texts)]).view(-1, n)
    picked = truth.gather(1, scores.argmax(1, keepdim=True))[:, 0]
    pair_accuracy, pairs = within_question_pair_accuracy(
        scores.flatten().tolist(), truth.flatten().tolist(), [i // n for i in range(len(texts))]
    )
    return {
        "questions": len(questions),
        "n": n,
        "temperature": temperature,
        "greedy": float(torch.tensor([vqa_accuracy(a.text, h) for a, h in zip(greedy, human_answers)]).mean()),
        "random_sample": float(truth[:, 0].mean()),
        "best_of_n_by_reward": float(picked.mean()),
        "best_of_n_by_truth": float(truth.max(1).values.mean()),
        "pair_accuracy": pair_accuracy,
        "pair_accuracy_se": math.sqrt(pair_accuracy * (1 - pair_accuracy) / pairs) if pairs else float("nan"),
        "pairs": pairs,
        "score_spread_within_question": float(scores.std(1).mean()),
        "score_spread_across_questions": float(scores.mean(1).std()),
    }
