"""The third stage of the tiny preset's base: left/right, taught through written-out places.

"Is the red circle left of the blue square?" is a comparison whose answer the relation word flips. A randomly
initialised language model does not find it from plain questions: measured in the demo's model and in toys
(docs/results.md, "Stage 1: left/right through written-out places"), every recipe of plain questions, descriptions
and positions stayed at chance (0.50). It is found when each operand is first made a simple token and the flip is
learned on top of a relation-free version, then the scaffold is taken away step by step (stepwise internalisation,
Deng, Choi and Shieber, "From Explicit CoT to Implicit CoT", 2024):

1. `left_steps`: questions ask "left" only, each object's column (1 to image_size / patch_size, the patch column
   its centre falls in) written after it and scored: `Q: <image> Is the red circle at 2 left of the blue square
   at 4? A: no`;
2. `both_steps`: "left" and "right", columns written, and on (up to `max_both_steps`) until the model writes both
   columns right on `columns_found` of the held-out questions: finding each object's column is a late, sudden
   step whose timing varies from run to run (two builds of the same recipe: both columns right 0.36 -> 0.81 between
   steps 1000 and 1500 in one, 0.31 -> 0.36 by step 3000 in the other), and dropping the columns before it gives
   plain questions nothing to stand on (they stayed at 0.50 in the second);
3. `ramp_steps`: the share of batches asked plainly ("Is the red circle left of the blue square?") rises from 0 to 1;
4. `plain_steps`: plain questions only.

A share of every batch (`describe_share`) goes on with the description stage on the same scenes, so the base keeps
what it learned there: without it, 4500 steps of this one family made SFT forget colour and shape (71.8 % on dev).
With it, the demo's model answered plain left/right questions on held-out scenes 0.91 (chance 0.50).

This is the only stage of the base that asks a VQA question family; its card says so. Scenes come from their own
stream (never a dataset's images) and must hold a pair of objects clearly apart along x; the tower stays frozen and
its features of the pool are computed once. The learning rate is constant after a short warm-up: the late plain
phase is where the answers are learned, and a cosine schedule would have decayed it by then.
"""

from __future__ import annotations

import logging
import random
import time

import numpy as np
import torch

from vlm.model.generation import vqa_prompt
from vlm.synthetic.description_pretraining import DescriptionBatches, object_order, right_padded
from vlm.synthetic.fit import fit
from vlm.synthetic.probes import frozen_tower_features
from vlm.synthetic.questions import clearly_apart
from vlm.synthetic.scenes import Scene, SceneObject, sample_scene

logger = logging.getLogger(__name__)

WARMUP_STEPS = 50


def scenes_with_pairs(stream: str, n: int, image_size: int) -> list[Scene]:
    """`n` scenes holding at least one pair of objects clearly apart along x (what a left/right question needs)."""
    rng, out = random.Random(stream), []
    while len(out) < n:
        scene = sample_scene(rng, image_size)
        if clearly_apart(scene.objects):
            out.append(scene)
    return out


def column(o: SceneObject, image_size: int, patch_size: int) -> int:
    """The patch column (1 = leftmost) the object's centre falls in."""
    return min(o.x // patch_size, image_size // patch_size - 1) + 1


class ComparisonQuestions:
    """Token ids and labels of left/right questions in the SFT prompt, plain or with each object's column written;
    scored: the written columns and the answer."""

    def __init__(self, processor, image_size: int, patch_size: int):
        self.tokenizer = processor.tokenizer
        self.image_size, self.patch_size = image_size, patch_size
        marker = " Is the"
        prompt = vqa_prompt(marker).replace(processor.image_token, processor.image_token * processor.num_image_tokens)
        self.head = self.tokenizer(prompt.rsplit(marker, 1)[0])["input_ids"]
        self.yes, self.no = (self.tokenizer(f" {w}", add_special_tokens=False)["input_ids"][0] for w in ("yes", "no"))

    def row(self, scene: Scene, rng: random.Random, written: bool, left_only: bool) -> tuple[list[int], list[int]]:
        a, b = rng.choice(clearly_apart(scene.objects))
        relation = "left" if left_only else rng.choice(("left", "right"))
        yes = (a.x < b.x) if relation == "left" else (a.x > b.x)
        pieces = [(f" Is the {a.name}", False)]
        if written:
            pieces += [(" at", False), (f" {column(a, self.image_size, self.patch_size)}", True)]
        pieces += [(f" {relation} of the {b.name}", False)]
        if written:
            pieces += [(" at", False), (f" {column(b, self.image_size, self.patch_size)}", True)]
        pieces += [("? A:", False), (f" {'yes' if yes else 'no'}{self.tokenizer.eos_token}", True)]
        ids, labels = list(self.head), [-100] * len(self.head)
        for text, scored in pieces:
            tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += tokens
            labels += tokens if scored else [-100] * len(tokens)
        return ids, labels

    def __call__(self, scenes: list[Scene], rng: random.Random, written: bool, left_only: bool) -> dict:
        """A right-padded batch, one question per scene."""
        return right_padded([self.row(s, rng, written, left_only) for s in scenes], self.tokenizer.pad_token_id)


@torch.no_grad()
def comparison_accuracy(model, questions: ComparisonQuestions, scenes, features, written: bool, seed: str) -> dict:
    """Held-out accuracy of the yes/no answer (yes against no at the answer's position, teacher-forced) and, with
    the columns written, how often both columns are written right: whether the model finds each object's place,
    not only compares given ones."""
    was_training = model.training
    model.eval()
    batch = {k: v.to(model.device) for k, v in questions(scenes, random.Random(seed), written, False).items()}
    labels = batch.pop("labels")
    logits = model(**batch, vision_features=features.to(model.device, model.dtype)).logits
    is_answer = (labels == questions.yes) | (labels == questions.no)
    positions = torch.arange(labels.shape[1], device=labels.device)
    at = (is_answer.int() * positions).argmax(1)  # the answer's position (the last yes/no label)
    rows = torch.arange(len(labels), device=labels.device)
    said_yes = logits[rows, at - 1, questions.yes] > logits[rows, at - 1, questions.no]
    report = {"accuracy": round((said_yes == (labels[rows, at] == questions.yes)).float().mean().item(), 4)}
    if written:
        columns = (labels != -100) & ~is_answer & (labels != questions.tokenizer.eos_token_id)
        predicted = torch.zeros_like(columns)
        predicted[:, :-1] = columns[:, 1:]  # the logits at i predict the token at i + 1
        right = logits.argmax(-1)[predicted] == labels[columns]
        report["both_columns_right"] = round(right.view(len(labels), -1).all(1).float().mean().item(), 4)
    model.train(was_training)
    return report


def pretrain_on_comparisons(
    model,
    processor,
    left_steps: int,
    both_steps: int,
    ramp_steps: int,
    plain_steps: int,
    max_both_steps: int | None = None,
    columns_found: float = 0.8,
    pool_scenes: int = 20000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    describe_share: float = 0.5,
    seed: int = 0,
    held_out_scenes: int = 600,
    eval_every: int = 250,
    log_every: int | None = None,
) -> dict:
    """Train `model`'s projector and language model in place on the curriculum above (the tower stays frozen);
    return a report: loss curve, held-out accuracy every `eval_every` steps (plain questions, questions with the
    columns written, both columns written right), where the ramp started, and the same figures at the end. The
    stage's dropout draws come from `seed`, not from what ran before it."""
    max_both_steps = both_steps if max_both_steps is None else max(max_both_steps, both_steps)
    most_steps = left_steps + max_both_steps + ramp_steps + plain_steps
    if most_steps < 1 or not 0.0 <= describe_share < 1.0:
        raise ValueError(
            f"the comparison stage needs steps > 0 and 0 <= describe_share < 1; got {most_steps}, {describe_share}"
        )
    torch.manual_seed(seed)
    size, patch = model.config.vision_config.image_size, model.config.vision_config.patch_size
    scenes = scenes_with_pairs(f"compare-{seed}", pool_scenes, size)
    held_out = scenes_with_pairs(f"compare-held-out-{seed}", held_out_scenes, size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    model.config.freeze_vision, model.config.freeze_projector, model.config.freeze_language_model = True, False, False
    model.apply_freezing()
    started = time.time()
    features, held_out_features = (frozen_tower_features(model, processor, s) for s in (scenes, held_out))
    questions = ComparisonQuestions(processor, size, patch)
    described_rows = round(batch_size * describe_share)
    if described_rows:  # tokenizing the pool's descriptions is only worth it when they are trained on
        descriptions = DescriptionBatches(processor, scenes, object_order("random", f"compare-describe-order-{seed}"))
    rng, draw = random.Random(f"compare-order-{seed}"), np.random.default_rng(seed)
    curve: list[dict] = []
    found_at: int | None = None  # the first evaluation, after `both_steps`, with the columns found
    ramp_start: int | None = None  # then, or once `max_both_steps` have passed without

    def evaluate(step: int) -> None:
        nonlocal found_at, ramp_start
        plain = comparison_accuracy(model, questions, held_out, held_out_features, False, f"compare-ask-{seed}")
        written = comparison_accuracy(model, questions, held_out, held_out_features, True, f"compare-ask-{seed}")
        right = written["both_columns_right"]
        curve.append(
            {"step": step, "plain": plain["accuracy"], "written": written["accuracy"], "both_columns_right": right}
        )
        logger.info("comparison pre-training, held out after %d steps: %s", step, curve[-1])
        if ramp_start is None and step >= left_steps + both_steps and right >= columns_found:
            found_at = ramp_start = step

    def plain_share(step: int) -> float:
        if ramp_start is None:
            return 0.0
        return min(1.0, (step - ramp_start) / ramp_steps) if ramp_steps else 1.0

    def step_loss(step: int) -> torch.Tensor | None:
        nonlocal ramp_start
        if step and step % eval_every == 0:  # before this step's update: the model after `step` updates
            evaluate(step)
        if ramp_start is None and step >= left_steps + max_both_steps:
            ramp_start = step  # the columns were not found in time: drop them anyway, and the card says so
        if ramp_start is not None and step >= ramp_start + ramp_steps + plain_steps:
            return None
        rows = draw.integers(0, pool_scenes, batch_size).tolist()
        asked, described = rows[described_rows:], rows[:described_rows]
        batch = questions([scenes[i] for i in asked], rng, rng.random() >= plain_share(step), step < left_steps)
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch, vision_features=features[asked].to(device, model.dtype)).loss
        if described:
            batch = {k: v.to(device) for k, v in descriptions(described).items()}
            described_loss = model(**batch, vision_features=features[described].to(device, model.dtype)).loss
            loss = (1 - describe_share) * loss + describe_share * described_loss
        return loss

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    name = "comparison pre-training"
    losses = fit(
        step_loss, params, most_steps, learning_rate, WARMUP_STEPS, name, log_every=log_every, schedule="constant"
    )
    steps = losses[-1]["step"]
    if not curve or curve[-1]["step"] != steps:
        evaluate(steps)
    model.eval()
    report = {
        "left_steps": left_steps,
        "both_steps": both_steps,
        "ramp_steps": ramp_steps,
        "plain_steps": plain_steps,
        "max_both_steps": max_both_steps,
        "columns_found": columns_found,
        "steps": steps,
        "ramp_started_at": ramp_start,
        "columns_found_at": found_at,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "describe_share": describe_share,
        "pool_scenes": pool_scenes,
        "held_out_scenes": held_out_scenes,
        "seconds": round(time.time() - started, 1),
        "loss_curve": losses,
        "held_out_curve": curve,
        "held_out_plain_accuracy": curve[-1]["plain"],
        "held_out_written_accuracy": curve[-1]["written"],
        "held_out_both_columns_right": curve[-1]["both_columns_right"],
    }
    logger.info("comparison pre-training done: %s", {k: v for k, v in report.items() if "curve" not in k})
    return report
