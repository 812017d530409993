"""Questions, human-style answers and LLaVA conversations about a synthetic scene.

Five question families in equal parts, each with a VQA `question_type` and `answer_type`:
colour of a shape, shape of a colour, count, "is there a ..." and "is the ... left/right of the ...".
Yes/no answers are balanced per family. Ten simulated humans answer each question the way VQA v2 annotators do:
mostly right, in varied surface forms ("2" / "two", "Red."), sometimes wrong, with a stated confidence.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from vlm.eval.metrics import majority_answer
from vlm.synthetic.scenes import COLORS, SHAPES, Scene, SceneObject

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five"]
QUESTION_FAMILIES = ("color", "shape", "count", "exist", "position")


@dataclass(frozen=True)
class SyntheticQuestion:
    family: str
    question: str
    answer: str  # canonical, normalised
    question_type: str  # VQA v2 question_type prefix
    answer_type: str  # "yes/no" | "number" | "other"
    distractors: tuple[str, ...]  # plausible wrong answers a careless human might give


def _plural(shape: str) -> str:
    return shape + "es" if shape.endswith("s") else shape + "s"


def _unique_by(scene: Scene, attribute: str) -> list:
    """Objects whose colour (or shape) no other object shares: "the square" then has one referent."""
    values = [getattr(o, attribute) for o in scene.objects]
    return [o for o in scene.objects if values.count(getattr(o, attribute)) == 1]


def _color_question(scene: Scene, rng: random.Random) -> SyntheticQuestion | None:
    unique = _unique_by(scene, "shape")
    if not unique:
        return None
    o = rng.choice(unique)
    wrong = tuple(c for c in COLORS if c != o.color)
    return SyntheticQuestion("color", f"What color is the {o.shape}?", o.color, "what color is the", "other", wrong)


def _shape_question(scene: Scene, rng: random.Random) -> SyntheticQuestion | None:
    unique = _unique_by(scene, "color")
    if not unique:
        return None
    o = rng.choice(unique)
    wrong = tuple(s for s in SHAPES if s != o.shape)
    q = f"What shape is the {o.color} object?"
    return SyntheticQuestion("shape", q, o.shape, "what shape is the", "other", wrong)


def _count_question(scene: Scene, rng: random.Random) -> SyntheticQuestion:
    if rng.random() < 0.5:
        q, n = "How many objects are there?", len(scene.objects)
    else:
        shape = rng.choice([o.shape for o in scene.objects])
        q, n = f"How many {_plural(shape)} are there?", sum(o.shape == shape for o in scene.objects)
    wrong = tuple(str(k) for k in (n - 1, n + 1) if k >= 0)
    return SyntheticQuestion("count", q, str(n), "how many", "number", wrong)


def exist_question(scene: Scene, rng: random.Random) -> SyntheticQuestion:
    present = {(o.color, o.shape) for o in scene.objects}
    if rng.random() < 0.5:
        color, shape = rng.choice(sorted(present))
        answer = "yes"
    else:
        # Hard negatives first: a colour or a shape that IS in the scene, paired wrongly.
        colors, shapes = {c for c, _ in present}, {s for _, s in present}
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        hard = [(c, s) for c, s in absent if c in colors or s in shapes]
        color, shape = rng.choice(hard if hard and rng.random() < 0.7 else absent)
        answer = "no"
    wrong = ("no",) if answer == "yes" else ("yes",)
    return SyntheticQuestion("exist", f"Is there a {color} {shape}?", answer, "is there a", "yes/no", wrong)


def clearly_apart(objects) -> list[tuple[SceneObject, SceneObject]]:
    """Ordered pairs of objects whose centres lie at least 6 px apart along x: which is left is then plain to see."""
    return [(a, b) for a in objects for b in objects if abs(a.x - b.x) >= 6]


def position_question(scene: Scene, rng: random.Random) -> SyntheticQuestion | None:
    pairs = clearly_apart(scene.objects)
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    relation = rng.choice(("left", "right"))
    truth = a.x < b.x if relation == "left" else a.x > b.x
    answer = "yes" if truth else "no"
    wrong = ("no",) if truth else ("yes",)
    q = f"Is the {a.name} {relation} of the {b.name}?"
    return SyntheticQuestion("position", q, answer, "is the", "yes/no", wrong)


_FAMILY_FNS = {
    "color": _color_question,
    "shape": _shape_question,
    "count": _count_question,
    "exist": exist_question,
    "position": position_question,
}


def sample_questions(scene: Scene, rng: random.Random, per_image: int) -> list[SyntheticQuestion]:
    """Up to `per_image` distinct questions, families drawn uniformly among those the scene allows."""
    families = list(QUESTION_FAMILIES)
    rng.shuffle(families)
    out: list[SyntheticQuestion] = []
    seen: set[str] = set()
    for family in families * 2:
        if len(out) >= per_image:
            break
        q = _FAMILY_FNS[family](scene, rng)
        if q is not None and q.question not in seen:
            out.append(q)
            seen.add(q.question)
    return out


def _surface_form(answer: str, rng: random.Random) -> str:
    """How a person might type a correct answer: number words, capitals, a trailing period."""
    if answer.isdigit() and rng.random() < 0.3:
        answer = NUMBER_WORDS[int(answer)] if int(answer) < len(NUMBER_WORDS) else answer
    if answer == "yes" and rng.random() < 0.05:
        answer = "yes it is"
    if rng.random() < 0.15:
        answer = answer.capitalize()
    if rng.random() < 0.05:
        answer += "."
    return answer


def human_answers(q: SyntheticQuestion, rng: random.Random, n: int = 10, error_rate: float = 0.1) -> list[dict]:
    """`n` VQA-style human answers (`answer`, `answer_confidence`, `answer_id`) with realistic disagreement."""
    answers = []
    for i in range(n):
        if rng.random() < error_rate and q.distractors:
            text, confidence = rng.choice(q.distractors), rng.choice(("maybe", "maybe", "no", "yes"))
        else:
            text, confidence = _surface_form(q.answer, rng), "yes" if rng.random() < 0.9 else "maybe"
        answers.append({"answer": text, "answer_confidence": confidence, "answer_id": i + 1})
    return answers


def multiple_choice_answer(answers: list[dict]) -> str:
    return majority_answer([a["answer"] for a in answers])


def where(o: SceneObject, image_size: int) -> str:
    """An object's place in a 3 x 3 grid: "at the top left", "in the center", ..."""
    horizontal = "left" if o.x < image_size / 3 else "right" if o.x > 2 * image_size / 3 else "middle"
    vertical = "top" if o.y < image_size / 3 else "bottom" if o.y > 2 * image_size / 3 else "center"
    return "in the center" if (horizontal, vertical) == ("middle", "center") else f"at the {vertical} {horizontal}"


def describe(scene: Scene, order: random.Random | None = None) -> str:
    """The count, then each object's colour, shape and place: left to right, or in an order drawn from `order`."""
    n = len(scene.objects)
    parts = [f"There {'is one object' if n == 1 else f'are {NUMBER_WORDS[n]} objects'} in the image."]
    objects = sorted(scene.objects, key=lambda o: o.x)
    if order is not None:
        order.shuffle(objects)
    for o in objects:
        parts.append(f"A {o.name} is {where(o, scene.image_size)}.")
    return " ".join(parts)


def _sentence(q: SyntheticQuestion) -> str:
    if q.answer_type == "yes/no":
        return "Yes." if q.answer == "yes" else "No."
    if q.family == "count":
        return f"There {'is' if q.answer == '1' else 'are'} {q.answer}."
    return f"It is {q.answer}." if q.family == "color" else f"It is a {q.answer}."


def conversation(scene: Scene, questions: list[SyntheticQuestion], rng: random.Random) -> list[dict]:
    """A LLaVA-Instruct conversation: a description turn or Q&A turns; `<image>` at the start or end of turn 1."""
    turns: list[tuple[str, str]] = []
    if rng.random() < 0.5:
        turns.append((rng.choice(("Describe the image.", "What do you see in this picture?")), describe(scene)))
    turns += [(q.question, _sentence(q)) for q in questions[: rng.randint(1, 3)]]
    first_q, first_a = turns[0]
    first = f"<image>\n{first_q}" if rng.random() < 0.5 else f"{first_q}\n<image>"
    messages = [{"from": "human", "value": first}, {"from": "gpt", "value": first_a}]
    for q, a in turns[1:]:
        messages += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return messages
