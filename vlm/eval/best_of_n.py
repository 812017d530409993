"""What a reward model is worth to RL, measured on questions with known answers: the policy samples n answers per
question and the reward model picks one (best-of-n). Its VQA accuracy is set beside greedy decoding, one random
sample, and the best of the n by the truth (the most any ranking of these samples can reach); and the reward model's
ranking of every two samples of one question whose VQA accuracy differs (pair accuracy), the ROC-AUC of its scores
against the truth over every sample, and the spread of its scores within and across questions. A reward model whose
pick is below greedy would teach the policy to be worse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from sklearn.metrics import roc_auc_score

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


def sample_and_score(
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The policy's greedy VQA accuracy per question, and n sampled answers per question with the reward model's
    score and the VQA accuracy of each: (greedy [Q], scores [Q, n], truth [Q, n])."""
    if n < 2:
        raise ValueError(f"best-of-n needs n >= 2 samples per question, got {n}")
    greedy = answer_questions(policy, processor, images, questions, max_new_tokens, batch_size)
    repeated = [x for x in images for _ in range(n)]
    asked = [q for q in questions for _ in range(n)]
    sampled = answer_questions(
        policy, processor, repeated, asked, max_new_tokens, batch_size, do_sample=True, temperature=temperature
    )
    texts = [a.text for a in sampled]
    scores = score_answers(reward_model, reward_processor, repeated, asked, texts, batch_size).view(-1, n).float()
    truth = torch.tensor([vqa_accuracy(t, human_answers[i // n]) for i, t in enumerate(texts)]).view(-1, n)
    greedy_truth = torch.tensor([vqa_accuracy(a.text, h) for a, h in zip(greedy, human_answers)])
    return greedy_truth, scores, truth


def summarise(greedy: torch.Tensor, scores: torch.Tensor, truth: torch.Tensor, truth_threshold: float = 0.5) -> dict:
    """Best-of-n figures of `sample_and_score`'s output (several calls' outputs may be concatenated first): mean VQA
    accuracy of greedy, a random sample, the reward model's pick and the truth's pick; the within-question pair
    accuracy with its standard error; the ROC-AUC of the scores against the truth (VQA accuracy >= threshold) over
    every sample; the score spread within and across questions."""
    questions, n = scores.shape
    picked = truth.gather(1, scores.argmax(1, keepdim=True))[:, 0]
    pair_accuracy, pairs = within_question_pair_accuracy(
        scores.flatten().tolist(), truth.flatten().tolist(), [i // n for i in range(questions * n)]
    )
    correct = (truth.flatten() >= truth_threshold).int().tolist()
    both = 0 < sum(correct) < len(correct)
    return {
        "questions": questions,
        "n": n,
        "greedy": float(greedy.mean()),
        "random_sample": float(truth[:, 0].mean()),
        "best_of_n_by_reward": float(picked.mean()),
        "best_of_n_by_truth": float(truth.max(1).values.mean()),
        "pair_accuracy": pair_accuracy,
        "pair_accuracy_se": math.sqrt(pair_accuracy * (1 - pair_accuracy) / pairs) if pairs else float("nan"),
        "pairs": pairs,
        "roc_auc": float(roc_auc_score(correct, scores.flatten().tolist())) if both else float("nan"),
        "score_spread_within_question": float(scores.std(1).mean()),
        "score_spread_across_questions": float(scores.mean(1).std()),
    }


def best_of_n(*args, temperature: float = 1.0, **kwargs) -> dict:
    """`summarise` of `sample_and_score` (the same arguments), with the sampling temperature."""
    return summarise(*sample_and_score(*args, temperature=temperature, **kwargs)) | {"temperature": temperature}
