"""VQA evaluation of a checkpoint: answer a split's questions, then score the answers with the official metric.

`score_predictions` is the whole scoring: the official VQA accuracy (`vlm.eval.metrics.vqa_accuracy`, leave-one-out
over the human answers) averaged overall, per `answer_type` and per `question_type`, plus answer-shape counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasets import Dataset
from tqdm.auto import tqdm

from vlm.data.images import load_image
from vlm.eval.metrics import vqa_accuracy
from vlm.model.generation import answer_questions


@dataclass
class GenerationSettings:
    max_new_tokens: int = field(default=8, metadata={"help": "Longest answer, in generated tokens."})
    do_sample: bool = field(default=False, metadata={"help": "Sample the answers; false: greedy (or beam) search."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (with do_sample only)."})
    top_p: float = field(
        default=1.0, metadata={"help": "Nucleus sampling: keep the smallest token set of this probability mass (0-1]."}
    )
    num_beams: int = field(default=1, metadata={"help": "Beams of beam search; 1: no beam search."})
    batch_size: int = field(default=64, metadata={"help": "Questions answered per generate() call."})

    def generate_kwargs(self) -> dict:
        kwargs = {"do_sample": self.do_sample, "num_beams": self.num_beams}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        return kwargs


def predict(model, processor, questions: Dataset, settings: GenerationSettings, desc: str = "answering") -> list[dict]:
    """`[{"question_id", "answer", "finished"}]` for every row; images are read one batch at a time."""
    predictions = []
    step = settings.batch_size
    for start in tqdm(range(0, len(questions), step), desc=desc, unit="batch", leave=False):
        rows = questions[start : start + step]
        images = [load_image(p, f"question_id {q}") for p, q in zip(rows["image_path"], rows["question_id"])]
        answers = answer_questions(
            model,
            processor,
            images,
            rows["question"],
            max_new_tokens=settings.max_new_tokens,
            batch_size=step,
            **settings.generate_kwargs(),
        )
        predictions += [
            {"question_id": q, "answer": a.text, "finished": a.finished} for q, a in zip(rows["question_id"], answers)
        ]
    return predictions


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def score_predictions(predictions: Sequence[dict], questions: Dataset) -> dict:
    """Official VQA accuracy overall / per answer type / per question type, and the answers' shape.

    `predictions` are `{"question_id", "answer"}` records (the official results format; an optional `finished`
    flag counts over-long answers). Every annotated question must have exactly one prediction.
    """
    by_id = {p["question_id"]: p for p in predictions}
    if len(by_id) != len(predictions):
        raise ValueError("predictions hold the same question_id more than once")
    missing = [q for q in questions["question_id"] if q not in by_id]
    if missing:
        raise ValueError(f"no prediction for question_id {missing[0]} ({len(missing)} question(s) in all)")
    per_answer_type, per_question_type, overall = defaultdict(list), defaultdict(list), []
    for row in questions:
        accuracy = vqa_accuracy(by_id[row["question_id"]]["answer"], row["answers"])
        overall.append(accuracy)
        per_answer_type[row["answer_type"]].append(accuracy)
        per_question_type[row["question_type"]].append(accuracy)
    answers = [by_id[q]["answer"] for q in questions["question_id"]]
    return {
        "questions": len(overall),
        "accuracy": _mean(overall),
        "accuracy_by_answer_type": {k: _mean(v) for k, v in sorted(per_answer_type.items())},
        "accuracy_by_question_type": {k: _mean(v) for k, v in sorted(per_question_type.items())},
        "questions_by_answer_type": {k: len(v) for k, v in sorted(per_answer_type.items())},
        "empty_answers": sum(1 for a in answers if not a.strip()),
        "overlong_answers": sum(1 for q in questions["question_id"] if by_id[q].get("finished") is False),
        "mean_answer_words": _mean([len(a.split()) for a in answers]),
    }
