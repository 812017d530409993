"""Experiment for docs/results.md ("Stage 1: left/right through written-out places"): the recipe of
`comparison_toy.py` in the demo's model. The shipped base's projector + language model (tower frozen, its features
cached) learn left/right questions in the SFT prompt with each object's column written out and scored,
`Q: <image> Is the red circle at 2 left of the blue square at 4? A: no` (columns 1-4 of 16 px): "left" only, then
both relation words, then the columns dropped gradually, then plain questions. Scenes are freshly sampled from
their own stream (never a dataset split); `--describe_share` trains the base's random-order descriptions of the same
scenes beside them, so it keeps them. Prints held-out accuracy on 600 other scenes' questions, plain and with the
columns written, and how often both columns are written right, every 250 steps; saves the model for
`vlm-rlhf sft --init_from`.

    python docs/experiments/comparison_stage.py --out runs/base-compare --left_steps 1000 --hold 1500 \
        --ramp 1500 --tail 500
"""

import argparse
import random
import time

import numpy as np
import torch

from vlm.model.builder import load_vlm, save_vlm
from vlm.model.generation import vqa_prompt
from vlm.synthetic.base_model import SHIPPED
from vlm.synthetic.description_pretraining import DescriptionBatches, _tower_features, object_order
from vlm.synthetic.questions import clearly_apart
from vlm.synthetic.scenes import sample_scene


def scenes_with_pairs(stream: str, n: int, size: int) -> list:
    """`n` scenes holding at least one pair of objects clearly apart along x (what a left/right question needs)."""
    rng, out = random.Random(stream), []
    while len(out) < n:
        scene = sample_scene(rng, size)
        if clearly_apart(scene.objects):
            out.append(scene)
    return out


def column(o) -> int:
    return min(o.x // 16, 3) + 1


class Questions:
    """Token ids and labels of left/right questions in the SFT prompt; scored: the written columns and the answer."""

    def __init__(self, processor):
        self.tokenizer = processor.tokenizer
        prompt = vqa_prompt("Is the").replace(processor.image_token, processor.image_token * processor.num_image_tokens)
        self.head = self.tokenizer(prompt.rsplit(" Is the", 1)[0])["input_ids"]
        self.yes, self.no = (self.tokenizer(f" {w}", add_special_tokens=False)["input_ids"][0] for w in ("yes", "no"))

    def row(self, scene, rng: random.Random, written: bool, left_only: bool):
        a, b = rng.choice(clearly_apart(scene.objects))
        relation = "left" if left_only else rng.choice(("left", "right"))
        yes = (a.x < b.x) if relation == "left" else (a.x > b.x)
        pieces = [(f" Is the {a.name}", False)]
        if written:
            pieces += [(" at", False), (f" {column(a)}", True)]
        pieces += [(f" {relation} of the {b.name}", False)]
        if written:
            pieces += [(" at", False), (f" {column(b)}", True)]
        pieces += [("? A:", False), (f" {'yes' if yes else 'no'}{self.tokenizer.eos_token}", True)]
        ids, labels = list(self.head), [-100] * len(self.head)
        for text, scored in pieces:
            tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += tokens
            labels += tokens if scored else [-100] * len(tokens)
        return ids, labels

    def batch(self, scenes, rng: random.Random, written: bool, left_only: bool):
        rows = [self.row(s, rng, written, left_only) for s in scenes]
        length = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), length), self.tokenizer.pad_token_id)
        labels, mask = torch.full_like(ids, -100), torch.zeros_like(ids)
        for i, (x, y) in enumerate(rows):
            ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
        return ids, mask, labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--left_steps", type=int, default=1000, help="every question asked with 'left'")
    ap.add_argument("--hold", type=int, default=1500, help="both relation words, columns written")
    ap.add_argument("--ramp", type=int, default=1500, help="steps over which the columns are dropped")
    ap.add_argument("--tail", type=int, default=500, help="plain questions at the end")
    ap.add_argument("--pool", type=int, default=20000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--describe_share", type=float, default=0.0, help="share of each batch that is descriptions")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, processor = load_vlm(SHIPPED)
    size = model.config.vision_config.image_size
    started = time.time()
    scenes = scenes_with_pairs("compare-0", args.pool, size)
    held = scenes_with_pairs("compare-held-out-0", 600, size)
    features, held_features = _tower_features(model, processor, scenes), _tower_features(model, processor, held)
    model.config.freeze_vision, model.config.freeze_projector, model.config.freeze_language_model = True, False, False
    model.apply_freezing()
    questions = Questions(processor)

    describe_rows = round(64 * args.describe_share)
    if describe_rows:  # tokenizing the pool's descriptions is only worth it when they are trained on
        descriptions = DescriptionBatches(processor, scenes, object_order("random", "compare-describe-order-0"))

    @torch.no_grad()
    def accuracy(written: bool) -> tuple[float, float]:
        """The answers' accuracy, and (with columns written) how often both columns are written right."""
        model.eval()
        ids, mask, labels = questions.batch(held, random.Random(7), written, False)
        logits = model(input_ids=ids, attention_mask=mask, vision_features=held_features).logits
        is_answer = (labels == questions.yes) | (labels == questions.no)
        at = (is_answer.int() * torch.arange(ids.shape[1])).argmax(1)  # the answer's position
        rows = torch.arange(len(ids))
        said_yes = logits[rows, at - 1, questions.yes] > logits[rows, at - 1, questions.no]
        columns = (labels != -100) & ~is_answer & (labels != processor.tokenizer.eos_token_id)
        shifted = torch.zeros_like(columns)
        shifted[:, :-1] = columns[:, 1:]  # logits at position i predict the token at i + 1
        right = logits.argmax(-1)[shifted] == labels[columns]
        both = right.view(len(ids), -1).all(1).float().mean().item() if written else float("nan")
        model.train()
        return (said_yes == (labels[rows, at] == questions.yes)).float().mean().item(), both

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    rng, draw, losses = random.Random("compare-order-0"), np.random.default_rng(0), []
    model.train()
    for step in range(1, args.left_steps + args.hold + args.ramp + args.tail + 1):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, step / 50)
        dropped = min(1.0, max(0, step - args.left_steps - args.hold) / args.ramp)
        written = rng.random() >= dropped
        rows = draw.integers(0, len(scenes), 64).tolist()
        asked = rows[describe_rows:]
        ids, mask, labels = questions.batch([scenes[i] for i in asked], rng, written, step <= args.left_steps)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, vision_features=features[asked]).loss
        if describe_rows:  # the description stage goes on beside the questions, so the base keeps what it had
            described = rows[:describe_rows]
            loss = (1 - args.describe_share) * loss + args.describe_share * model(
                **descriptions(described), vision_features=features[described]
            ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 250 == 0:
            (plain, _), (with_columns, columns_right) = accuracy(False), accuracy(True)
            print(  # noqa: T201 (a script)
                f"step {step}: loss {np.mean(losses[-250:]):.3f}, share of plain questions {dropped:.2f}, "
                f"held-out plain {plain:.3f}, with columns {with_columns:.3f} (both columns written right "
                f"{columns_right:.3f}), {time.time() - started:.0f} s",
                flush=True,
            )
    model.eval()
    save_vlm(model.cpu(), processor, args.out)


if __name__ == "__main__":
    main()
