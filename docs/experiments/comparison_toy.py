"""Toy for docs/results.md ("Stage 1: left/right through written-out places"): can the 4 x 128 GPT-2 of
`exist_toy.py` (16 ground-truth patch tokens, then the question) learn the demo's "is the <c> <s> left|right of
the <c> <s>?" when each object's place is first written out in the question and later dropped?

A scaffolded question names each object's column (or patch) right after it, and the model is trained to write it:
"is the red circle [col 2] left of the blue square [col 4] ?" -> yes|no, loss on the two places and the answer.
The curriculum: `--left_steps` with every question asked with "left" (no dependence on the relation word), then
`--hold` steps with both relations, then over `--ramp` steps the share of questions without the places grows from 0
to 1 (stepwise internalisation: Deng, Choi and Shieber 2024, "From Explicit CoT to Implicit CoT"), then `--tail`
steps of plain questions. `--desc` steps of random-order descriptions (`exist_toy.py`'s desc-random) come first.
Printed every 250 steps: held-out accuracy on 1000 plain questions and on 1000 scaffolded ones (both relations),
and how often both places are written right.

    python docs/experiments/comparison_toy.py --desc 1000 --left_steps 750 --hold 750 --ramp 2500 --tail 1000
    python docs/experiments/comparison_toy.py --scaffold patches --desc 1000 --left_steps 0 --hold 3000
"""

import argparse
import random
import time

import torch
import torch.nn.functional as F
from exist_toy import (
    COLUMN0,
    LEFT,
    NO,
    PATCH0,
    RIGHT,
    VOCAB,
    YES,
    description,
    object_ids,
    patch_embeddings,
    patch_of,
    patch_tokens,
)
from transformers import GPT2Config, GPT2LMHeadModel

from vlm.synthetic.questions import position_question
from vlm.synthetic.scenes import sample_scene

IS, QUESTION_MARK = 11, 14


def place(o, scaffold: str) -> int:
    return COLUMN0 + min(o.x // 16, 3) if scaffold == "columns" else PATCH0 + patch_of(o)


def question(rng: random.Random, scaffold: str, written: bool, left_only: bool):
    """Patches, token ids and labels (-100 where not scored) of one left/right question of the demo's family."""
    q = None
    while q is None:
        scene = sample_scene(rng)
        q = position_question(scene, rng)
    words = q.question[:-1].split()  # Is the <c> <s> left|right of the <c> <s>
    by_name = {o.name: o for o in scene.objects}
    a, relation, b = by_name[" ".join(words[2:4])], words[4], by_name[" ".join(words[7:9])]
    if left_only and relation == "right":  # the same question, asked the other way round
        a, b, relation = b, a, "left"
    answer = YES if (a.x < b.x) == (relation == "left") else NO
    first, second = list(object_ids(a.color, a.shape)), list(object_ids(b.color, b.shape))
    if written:
        first, second = first + [place(a, scaffold)], second + [place(b, scaffold)]
    tokens = [IS, *first, LEFT if relation == "left" else RIGHT, *second, QUESTION_MARK, answer]
    labels = [-100] * len(tokens)
    labels[-2] = answer  # read at "?"
    if written:
        labels[len(first) - 1] = first[-1]  # each place, written after the object's colour and shape
        labels[len(first) + len(second) - 1] = second[-1]
    colours, shapes = patch_tokens(scene)
    return colours, shapes, torch.tensor(tokens), torch.tensor(labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scaffold", choices=("columns", "patches"), default="columns")
    ap.add_argument("--desc", type=int, default=0, help="random-order description steps first")
    ap.add_argument("--left_steps", type=int, default=750)
    ap.add_argument("--hold", type=int, default=750, help="scaffolded questions with both relations")
    ap.add_argument("--ramp", type=int, default=2500, help="steps over which the scaffold is dropped")
    ap.add_argument("--tail", type=int, default=1000, help="plain questions at the end")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=128, n_layer=4, n_head=4)
    model = GPT2LMHeadModel(config)
    embed = model.transformer.wte
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    def logits(colours, shapes, tokens):
        patches = patch_embeddings(embed, colours, shapes)
        return model(inputs_embeds=torch.cat([patches, embed(tokens.clamp(min=0))], 1)).logits[:, colours.shape[1] :]

    def stack(rows):
        return [torch.stack(x) for x in zip(*rows)]

    held_rng = random.Random(123)
    plain = stack([question(held_rng, args.scaffold, False, False) for _ in range(1000)])
    written = stack([question(held_rng, args.scaffold, True, False) for _ in range(1000)])

    @torch.no_grad()
    def accuracy(held):
        colours, shapes, tokens, labels = held
        scores = logits(colours, shapes, tokens)
        predicted = scores.argmax(-1)
        answers = (scores[:, -2, [YES, NO]].argmax(1) == 0) == (labels[:, -2] == YES)  # read at "?"
        scored = labels[:, :-2] != -100
        places = ((predicted[:, :-2] == labels[:, :-2]) | ~scored).all(1)
        return answers.float().mean().item(), places.float().mean().item()

    phases = [("desc", args.desc), ("left", args.left_steps), ("hold", args.hold), ("ramp", args.ramp)]
    phases.append(("tail", args.tail))
    started, step = time.time(), 0
    for phase, steps in phases:
        for k in range(steps):
            step += 1
            if phase == "desc":
                colours, shapes, tokens = stack([description("desc-random", rng) for _ in range(64)])
                predicted = logits(colours, shapes, tokens)[:, :-1]
                loss = F.cross_entropy(predicted.transpose(1, 2), tokens[:, 1:], ignore_index=-100)
            else:
                dropped = {"left": 0.0, "hold": 0.0, "ramp": (k + 1) / steps, "tail": 1.0}[phase]
                scaffolded = rng.random() >= dropped
                *inputs, labels = stack([question(rng, args.scaffold, scaffolded, phase == "left") for _ in range(64)])
                loss = F.cross_entropy(logits(*inputs).transpose(1, 2), labels, ignore_index=-100)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 250 == 0:
                plain_accuracy, _ = accuracy(plain)
                written_accuracy, places = accuracy(written)
                print(  # noqa: T201 (a script)
                    f"{phase} step {step}: loss {loss.item():.3f}, plain questions {plain_accuracy:.3f}, "
                    f"with places {written_accuracy:.3f} (places written right {places:.3f}), "
                    f"{time.time() - started:.0f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
