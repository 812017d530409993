"""The instruction mix of the embedded default, written as LLaVA-Instruct JSON from the synthetic scenes.

LLaVA-Instruct-158K's three kinds, asked of the rendered scenes and answered from their ground truth:
- conversation: 2-4 questions about the image, answered in full sentences;
- detail: "Describe the image in detail." and the like, answered with every object's colour, shape, size and place
  and the objects' left/right order;
- reasoning: questions that combine facts (the leftmost object, what would remain, which colours repeat), answered
  with the facts and the conclusion;
plus LLaVA-1.5's short VQA items (the split's VQA questions with "Answer the question using a single word or
phrase.", answered with the VQA answer, and existence questions phrased as VQA v2 also asks them) and, optionally,
text-only items about shapes and colours.

Each scene gives at most one item, of a kind drawn by the configured ratios, so the train and val files hold
different scenes (the val file is the held-out set). Deterministic for a seed.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from vlm.data.errors import DataError
from vlm.data.vqa import image_file, load_vqa
from vlm.io import atomic_write_json
from vlm.model.chat_template import SHORT_ANSWER_SUFFIX
from vlm.synthetic.questions import NUMBER_WORDS, exist_question, where
from vlm.synthetic.scenes import COLORS, SHAPES, Scene, SceneObject, load_scenes

logger = logging.getLogger(__name__)
KINDS = ("conversation", "detail", "reasoning", "vqa", "text")
DETAIL_PROMPTS = (
    "Describe the image in detail.",
    "Give a detailed description of this picture.",
    "What is in this image? Describe every object.",
)
SIDES = {"triangle": "three", "square": "four", "circle": "no", "cross": "twelve"}


def mix_file(root: str | Path, split: str) -> Path:
    return Path(root) / f"llava_instruct_mix_{split}.json"


@dataclass
class InstructMixConfig:
    data_dir: str = field(
        default="runs/demo/data",
        metadata={"help": "Synthetic VQA folder (`data synth`) to read the scenes from and write the mix files to."},
    )
    splits: list[str] = field(
        default_factory=lambda: ["train2014", "val2014"],
        metadata={"help": "VQA splits to write an instruction mix for (one llava_instruct_mix_<split>.json each)."},
    )
    # Fractions of the items per kind (normalised); "text" items take no scene.
    ratios: dict | str | None = field(
        default_factory=lambda: {"conversation": 0.3, "detail": 0.2, "reasoning": 0.2, "vqa": 0.25, "text": 0.05},
        metadata={
            "help": "Fraction of the items per kind (conversation, detail, reasoning, vqa, text), normalised to sum "
            "to 1; a dict in YAML or a JSON string on the command line. Text items take no scene."
        },
    )
    max_scenes: int | None = field(
        default=None, metadata={"help": "Scenes used per split (one item each); unset: every scene."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the item kinds, their order and their wording."})

    def __post_init__(self):
        if isinstance(self.ratios, str):
            try:
                self.ratios = json.loads(self.ratios)
            except json.JSONDecodeError as e:
                raise ValueError(f"ratios: not JSON ({e.msg}): {self.ratios!r}") from None
        valid = isinstance(self.ratios, dict) and self.ratios and not set(self.ratios) - set(KINDS)
        if not valid or any(v < 0 for v in self.ratios.values()) or not sum(self.ratios.values()):
            raise ValueError(f"ratios: non-negative fractions over {KINDS}, not all 0; got {self.ratios}")


def _size_word(o: SceneObject, size: int) -> str:
    return "small" if o.size < size / 4.5 else "large" if o.size > size / 3.5 else "medium-sized"


def _count_phrase(n: int, noun: str = "object") -> str:
    return f"one {noun}" if n == 1 else f"{NUMBER_WORDS[n]} {noun}s"


def detailed_description(scene: Scene) -> str:
    objects = sorted(scene.objects, key=lambda o: o.x)
    n = len(objects)
    parts = [f"The image shows {_count_phrase(n)} on a light background."]
    for o in objects:
        parts.append(f"A {_size_word(o, scene.image_size)} {o.name} is {where(o, scene.image_size)}.")
    if n > 1:
        order = ", then ".join(f"the {o.name}" for o in objects)
        parts.append(f"From left to right: {order}.")
    return " ".join(parts)


def _conversation(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    objects, size = scene.objects, scene.image_size
    n = len(objects)
    pool = [
        ("How many objects are in the image?", f"There {'is' if n == 1 else 'are'} {_count_phrase(n)} in the image."),
        ("What colors do you see?", f"I see {_join(sorted({o.color for o in objects}))}."),
    ]
    for o in objects:
        pool.append((f"Where is the {o.name}?", f"The {o.name} is {where(o, size)} of the image."))
        pool.append((f"How big is the {o.name}?", f"The {o.name} is {_size_word(o, size)}."))
    present = {(o.color, o.shape) for o in objects}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    color, shape = rng.choice(absent)
    pool.append((f"Is there a {color} {shape} in the image?", f"No, there is no {color} {shape} in the image."))
    o = rng.choice(objects)
    pool.append((f"Is there a {o.name} in the image?", f"Yes, there is a {o.name} {where(o, size)}."))
    rng.shuffle(pool)
    return pool[: rng.randint(2, 4)]


def _reasoning(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    objects = sorted(scene.objects, key=lambda o: o.x)
    n = len(objects)
    options = []
    if n > 1:
        left, right = objects[0], objects[-1]
        options.append(
            (
                "Which object is furthest to the left, and what color is it?",
                f"Reading the objects from left to right, the {left.name} comes first, so the leftmost object is a "
                f"{left.shape} and its color is {left.color}.",
            )
        )
        options.append(
            (
                "Which object is closest to the right edge of the image?",
                f"The {right.name} lies further right than the other {_count_phrase(n - 1)}, so it is closest to "
                f"the right edge.",
            )
        )
    o = rng.choice(objects)
    rest = n - 1
    options.append(
        (
            f"If the {o.name} were removed, how many objects would be left?",
            f"There are {_count_phrase(n)} now; removing the {o.name} would leave "
            f"{'no objects' if rest == 0 else _count_phrase(rest)}.",
        )
    )
    colors = [x.color for x in objects]
    repeated = sorted({c for c in colors if colors.count(c) > 1})
    options.append(
        (
            "Do any two objects share a color?",
            f"Yes: {_join([f'{colors.count(c)} objects are {c}' for c in repeated])}."
            if repeated
            else f"No. The {_count_phrase(n)} {'has' if n == 1 else 'have'} "
            f"{'one color' if n == 1 else 'different colors'}: {_join(colors)}.",
        )
    )
    return [rng.choice(options)]


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _text_item(rng: random.Random) -> list[tuple[str, str]]:
    shape = rng.choice(SHAPES)
    a, b = rng.sample(list(COLORS), 2)
    options = [
        (f"How many corners does a {shape} have?", f"A {shape} has {SIDES[shape]} corners."),
        (
            f"Name two colors other than {a} and {b}.",
            f"{_join([c for c in COLORS if c not in (a, b)][:2]).capitalize()}.",
        ),
        (
            "List the shapes you know about.",
            f"I know about the {_join([s + 's' for s in SHAPES[:2]])}, {SHAPES[2]}s and {SHAPES[3]}es.",
        ),
    ]
    return [rng.choice(options)]


def _to_llava(item_id: str, image: str | None, turns: list[tuple[str, str]], rng: random.Random) -> dict:
    messages = []
    for k, (question, answer) in enumerate(turns):
        if k == 0 and image is not None:  # LLaVA's two placements of <image> in the first turn
            question = f"<image>\n{question}" if rng.random() < 0.5 else f"{question}\n<image>"
        messages += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": item_id, **({"image": image} if image is not None else {}), "conversations": messages}


def _vqa_turns(scene: Scene, vqa_rows: list[dict], rng: random.Random) -> list[tuple[str, str]]:
    """1-3 of the image's VQA questions, and half the time an existence question in VQA v2's other phrasing
    ("Is there a red circle in the image?", yes or no from the scene, negatives sharing a colour or a shape)."""
    rows = rng.sample(vqa_rows, min(len(vqa_rows), rng.randint(1, 3)))
    turns = [(r["question"], r["multiple_choice_answer"]) for r in rows]
    if rng.random() < 0.5:
        exist = exist_question(scene, rng)
        turns.insert(rng.randint(0, len(turns)), (exist.question[:-1] + " in the image?", exist.answer))
    return [(f"{question}\n{SHORT_ANSWER_SUFFIX}", answer) for question, answer in turns]


def instruction_turns(kind: str, scene: Scene, vqa_rows: list[dict], rng: random.Random) -> list[tuple[str, str]]:
    """(question, answer) turns of one item of `kind` about `scene` (`vqa_rows`: its VQA questions, for "vqa")."""
    if kind == "text":
        return _text_item(rng)
    if kind == "conversation":
        return _conversation(scene, rng)
    if kind == "detail":
        return [(rng.choice(DETAIL_PROMPTS), detailed_description(scene))]
    if kind == "reasoning":
        return _reasoning(scene, rng)
    return _vqa_turns(scene, vqa_rows, rng)


def build_mix(scenes: dict[int, Scene], vqa_by_image: dict[int, list[dict]], split: str, cfg: InstructMixConfig):
    rng = random.Random(f"{cfg.seed}-{split}-instruct")
    kinds = list(cfg.ratios)
    weights = [cfg.ratios[k] for k in kinds]
    image_ids = sorted(scenes)[: cfg.max_scenes] if cfg.max_scenes else sorted(scenes)
    items, counts = [], dict.fromkeys(KINDS, 0)
    for image_id in image_ids:
        kind = rng.choices(kinds, weights)[0]
        counts[kind] += 1
        scene, image = scenes[image_id], image_file("", split, image_id).name
        if kind == "vqa" and not vqa_by_image.get(image_id):
            raise DataError(f"{split}: image {image_id} has no VQA question for a short-answer item")
        turns = instruction_turns(kind, scene, vqa_by_image.get(image_id, []), rng)
        item_id, item_image = (f"text-{image_id}", None) if kind == "text" else (f"{kind}-{image_id}", image)
        items.append(_to_llava(item_id, item_image, turns, rng))
    return items, counts


def write_instruct_mix(cfg: InstructMixConfig) -> dict:
    """Write `llava_instruct_mix_<split>.json` per split (atomically); returns the item counts per split and kind."""
    summary = {}
    for split in cfg.splits:
        scenes = load_scenes(cfg.data_dir, split)
        vqa = load_vqa(cfg.data_dir, split, require_annotations=True)
        by_image: dict[int, list[dict]] = {}
        for r in vqa.select_columns(["image_id", "question", "multiple_choice_answer"]):
            by_image.setdefault(r["image_id"], []).append(r)
        items, counts = build_mix(scenes, by_image, split, cfg)
        atomic_write_json(mix_file(cfg.data_dir, split), items)
        summary[split] = {"items": len(items), **counts}
        logger.info("%s: %d instruction items %s", split, len(items), counts)
    return summary
