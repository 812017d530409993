"""Toy for docs/results.md ("Stage 1: a toy of the yes/no plateau"): can a random 4 x 128 GPT-2 learn
"Is there a <colour> <shape>?" from ground-truth patch tokens, and what makes it start?

Each scene of the synthetic generator becomes 16 patch tokens, each the sum of the word embeddings of the colour
and shape of the object centred in it (0 when none), followed by the question's 6 tokens; the answer is read at the
last position. Tasks (`--task`, `+` mixes them evenly): exist (the demo's question family, its own yes/no and hard
negatives), c1 ("is there a <colour> object?"), s1 (the same for a shape), col ("what colour is the <shape>?"),
where (the patch of the named object), pos (the demo's "is the <c> <s> left|right of the <c> <s>?"), pos-left (the
same questions, all asked with "left"), half ("is the <c> <s> on the left half?", one object, no comparison), and
desc-x / desc-random: the base's description stage in miniature, every object's colour, shape and patch written
after the patches, left to right or in a random order (next-token loss on the whole description). desc-rel adds one
relation to a random-order description ("<c> <s> left|right <c> <s>", the relation word before the second object);
desc-between adds "<c> <s> <c> <s> left|right <c> <s>" (of these two, the one on that side: chosen after both are
named, the comparison itself; its held-out accuracy is printed as `between`). `--pos2d` adds each patch's column
and row to its token: learned embeddings, or a learned direction times the coordinate (`linear`). Held-out accuracy
is on 1000 questions of the `--eval` family.

    python docs/experiments/exist_toy.py --task exist --steps 3000 [--init 0.1]
    python docs/experiments/exist_toy.py --task c1+s1 --steps 1000 --then exist --then_steps 2000
    python docs/experiments/exist_toy.py --task desc-random --steps 2000 --then exist --then_steps 2000
    python docs/experiments/exist_toy.py --task desc-between --pos2d linear --steps 2000 \
        --then pos --then_steps 2000 --eval pos
"""

import argparse
import random
import time

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from vlm.synthetic.questions import clearly_apart, exist_question, position_question
from vlm.synthetic.scenes import COLORS, SHAPES, sample_scene

COLOURS, GRID = list(COLORS), 4
# token ids: 1-6 colours, 7-10 shapes, 11-14 "is there a ?", 15/16 yes/no, 18 image, 19/20 "object"/"thing",
# 21-24 "what colour where is", 25-40 the 16 patches, 41/42 start/end of a description, 43/44 left/right
YES, NO, IMAGE, ANY_COLOUR, ANY_SHAPE, PATCH0, DESCRIBE, END, VOCAB = 15, 16, 18, 19, 20, 25, 41, 42, 56
LEFT, RIGHT, COLUMN0, ROW0 = 43, 44, 45, 49  # 45-48 / 49-52: each patch's column and row (--pos2d)
# DESCRIBE, (colour, shape, patch) per object, then for desc-rel one relation (colour, shape, left|right, colour,
# shape) or for desc-between (colour, shape, colour, shape, left|right, colour, shape), END
DESCRIPTION_LENGTH = 2 + 3 * 4 + 7


def patch_of(o) -> int:
    return min(o.y // 16, GRID - 1) * GRID + min(o.x // 16, GRID - 1)


def patch_tokens(scene):
    """Colour and shape ids (0 = none) of the object centred in each of the 16 patches."""
    colours, shapes = torch.zeros(GRID * GRID, dtype=torch.long), torch.zeros(GRID * GRID, dtype=torch.long)
    for o in scene.objects:
        colours[patch_of(o)], shapes[patch_of(o)] = 1 + COLOURS.index(o.color), 1 + SHAPES.index(o.shape)
    return colours, shapes


def patch_embeddings(embed, colours, shapes):
    """Each patch's token: the image token's embedding plus those of its object's colour and shape (none: 0)."""
    patches = embed(torch.full_like(colours, IMAGE))
    patches = patches + (colours > 0)[..., None] * embed(colours.clamp(min=1))
    return patches + (shapes > 0)[..., None] * embed(shapes + 6)


def object_ids(colour: str, shape: str) -> tuple[int, int]:
    return 1 + COLOURS.index(colour), 7 + SHAPES.index(shape)


def example(task: str, rng: random.Random):
    scene = sample_scene(rng)
    colours, shapes = patch_tokens(scene)
    if task == "exist":
        q = exist_question(scene, rng)
        colour, shape = q.question[:-1].split()[-2:]
        words, answer = object_ids(colour, shape), YES if q.answer == "yes" else NO
    elif task == "c1":
        colour = rng.choice(COLOURS)
        words = (1 + COLOURS.index(colour), ANY_SHAPE)
        answer = YES if any(o.color == colour for o in scene.objects) else NO
    elif task == "s1":
        shape = rng.choice(SHAPES)
        words = (ANY_COLOUR, 7 + SHAPES.index(shape))
        answer = YES if any(o.shape == shape for o in scene.objects) else NO
    elif task == "col":
        o = rng.choice(scene.objects)
        words, answer = (ANY_COLOUR, 7 + SHAPES.index(o.shape)), 1 + COLOURS.index(o.color)
    elif task in ("pos", "pos-left"):  # the demo's left/right family, 7 tokens: never mixed in one batch
        q = position_question(scene, rng)
        while q is None:
            scene = sample_scene(rng)
            colours, shapes = patch_tokens(scene)
            q = position_question(scene, rng)
        words = q.question[:-1].split()  # Is the <c> <s> left|right of the <c> <s>
        a, relation, b = words[2:4], words[4], words[7:9]
        if task == "pos-left" and relation == "right":  # the same question, asked the other way round
            a, relation, b = b, "left", a
        words = (*object_ids(*a), LEFT if relation == "left" else RIGHT, *object_ids(*b))
        return colours, shapes, torch.tensor([11, *words, 14]), YES if q.answer == "yes" else NO
    elif task == "half":  # "is the <c> <s> left?": one object's side of the image, no comparison
        o = rng.choice(scene.objects)
        words = (*object_ids(o.color, o.shape), LEFT)
        return colours, shapes, torch.tensor([11, *words, 14]), YES if o.x < 32 else NO
    else:  # where
        o = rng.choice(scene.objects)
        words, answer = object_ids(o.color, o.shape), PATCH0 + patch_of(o)
    prefix = {"col": (21, 22, 13), "where": (23, 24, 13)}.get(task, (11, 12, 13))
    return colours, shapes, torch.tensor([*prefix, *words, 14]), answer


def description(task: str, rng: random.Random):
    """Patches and the description tokens (-100 past END) of a fresh scene, objects in x or random order."""
    scene = sample_scene(rng)
    colours, shapes = patch_tokens(scene)
    objects = sorted(scene.objects, key=lambda o: o.x)
    if task != "desc-x":
        rng.shuffle(objects)
    tokens = [DESCRIBE]
    for o in objects:
        tokens += [*object_ids(o.color, o.shape), PATCH0 + patch_of(o)]
    pairs = clearly_apart(objects)
    if task == "desc-rel" and pairs:  # one true relation between two objects clearly apart, as the questions ask
        a, b = rng.choice(pairs)
        tokens += [*object_ids(a.color, a.shape), LEFT if a.x < b.x else RIGHT, *object_ids(b.color, b.shape)]
    if task == "desc-between" and pairs:  # "of a and b, the one on the left|right is x": x read after both names
        a, b = rng.choice(pairs)
        side = rng.choice((LEFT, RIGHT))
        x = min(a, b, key=lambda o: o.x) if side == LEFT else max(a, b, key=lambda o: o.x)
        tokens += [*object_ids(a.color, a.shape), *object_ids(b.color, b.shape), side, *object_ids(x.color, x.shape)]
    tokens = tokens + [END] + [-100] * (DESCRIPTION_LENGTH - len(tokens) - 1)
    return colours, shapes, torch.tensor(tokens)


def batch(tasks, n, rng):
    rows = [example(rng.choice(tasks), rng) for _ in range(n)]
    return [torch.stack([r[i] for r in rows]) for i in range(3)] + [torch.tensor([r[3] for r in rows])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="exist")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--layers", type=int, default=4, help="GPT-2 layers")
    ap.add_argument("--init", type=float, default=0.02, help="GPT-2's initializer_range")
    ap.add_argument("--then", default=None, help="a second curriculum phase: train on these tasks after --steps")
    ap.add_argument("--then_steps", type=int, default=0)
    ap.add_argument(
        "--pos2d",
        choices=("none", "learned", "linear"),
        default="none",
        help="add each patch's column and row: learned embeddings, or a learned direction times the coordinate",
    )
    ap.add_argument(
        "--eval", default="exist", choices=("exist", "pos", "pos-left", "half"), help="the held-out question family"
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = random.Random(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=128, n_layer=args.layers, n_head=4)
    config.initializer_range = args.init
    model = GPT2LMHeadModel(config)
    embed = model.transformer.wte
    coordinate_map = torch.nn.Linear(2, config.n_embd, bias=False)
    parameters = [*model.parameters(), *coordinate_map.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.0)

    def all_logits(colours, shapes, words):
        patches = patch_embeddings(embed, colours, shapes)
        index = torch.arange(GRID * GRID)
        if args.pos2d == "learned":
            patches = patches + embed(COLUMN0 + index % GRID) + embed(ROW0 + index // GRID)
        elif args.pos2d == "linear":
            coordinates = torch.stack([index % GRID, index // GRID], -1).float() / (GRID - 1) - 0.5
            patches = patches + coordinate_map(coordinates)
        return model(inputs_embeds=torch.cat([patches, embed(words.clamp(min=0))], 1)).logits

    def logits(colours, shapes, words):
        return all_logits(colours, shapes, words)[:, -1]

    def description_loss(task):
        colours, shapes, tokens = (torch.stack(x) for x in zip(*(description(task, rng) for _ in range(64))))
        predicted = all_logits(colours, shapes, tokens)[:, GRID * GRID : -1]
        return F.cross_entropy(predicted.transpose(1, 2), tokens[:, 1:], ignore_index=-100)

    held_out = batch([args.eval], 1000, random.Random(1))
    between_rng = random.Random(2)
    between = [description("desc-between", between_rng) for _ in range(500)]
    between = [(c, s, t) for c, s, t in between if (t == LEFT).any() or (t == RIGHT).any()]
    between = [torch.stack(x) for x in zip(*between)]

    def between_accuracy():
        """desc-between's x (colour and shape, the two tokens before END), named after both objects: the
        comparison itself."""
        colours, shapes, tokens = between
        predicted = all_logits(colours, shapes, tokens)[:, GRID * GRID : -1].argmax(-1)
        targets = tokens[:, 1:]
        end = (targets == END).int().argmax(1)
        rows = torch.arange(len(targets))
        right = (predicted[rows, end - 1] == targets[rows, end - 1]) & (
            predicted[rows, end - 2] == targets[rows, end - 2]
        )
        return right.float().mean().item()

    started = time.time()
    for step in range(1, args.steps + args.then_steps + 1):
        task = args.task if step <= args.steps else args.then
        if task.startswith("desc"):
            loss = description_loss(task)
        else:
            *inputs, answers = batch(task.split("+"), 64, rng)
            loss = F.cross_entropy(logits(*inputs), answers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 250 == 0:
            with torch.no_grad():
                said_yes = logits(*held_out[:3])[:, [YES, NO]].argmax(1) == 0
            accuracy = (said_yes == (held_out[3] == YES)).float().mean().item()
            print(  # noqa: T201 (a script)
                f"{task} step {step}: loss {loss.item():.3f}, {args.eval} accuracy {accuracy:.3f}, "
                f"between {between_accuracy():.3f}, "
                f"{time.time() - started:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
