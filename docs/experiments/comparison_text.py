"""Text-only check for docs/results.md ("Stage 1: left/right through written-out places"): can a random 4 x 128
GPT-2 compare two places given as tokens, `[fillers..., place A, left|right, place B, ?]` -> yes|no?

`--places patches`: each place is one of 16 patch tokens, its column the patch index mod 4; `columns`: one of 4
column tokens. `--left_only` asks every question with "left" (the answer then follows each place alone); otherwise
the relation word flips it. `--fillers N` puts N random tokens first. Pairs in one column are not drawn. Held-out
accuracy on 1000 rows every 100 steps.

    python docs/experiments/comparison_text.py --places patches
    python docs/experiments/comparison_text.py --places columns --fillers 20
"""

import argparse
import random

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

YES, NO, LEFT, RIGHT, QUESTION_MARK, VOCAB = 30, 31, 32, 33, 34, 40  # 0-15 patches (0-3 columns), 4-29 fillers


def row(rng: random.Random, places: str, left_only: bool, fillers: int) -> tuple[list[int], int]:
    a, b = rng.randrange(16), rng.randrange(16)
    while a % 4 == b % 4:
        a, b = rng.randrange(16), rng.randrange(16)
    relation = LEFT if left_only or rng.random() < 0.5 else RIGHT
    yes = (a % 4 < b % 4) == (relation == LEFT)
    if places == "columns":
        a, b = a % 4, b % 4
    return [rng.randrange(4, 30) for _ in range(fillers)] + [a, relation, b, QUESTION_MARK], YES if yes else NO


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--places", choices=("patches", "columns"), default="patches")
    ap.add_argument("--left_only", action="store_true")
    ap.add_argument("--fillers", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = random.Random(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=128, n_layer=4, n_head=4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    def draw(n: int, source: random.Random):
        rows = [row(source, args.places, args.left_only, args.fillers) for _ in range(n)]
        return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])

    held_out = draw(1000, random.Random(1))
    for step in range(1, args.steps + 1):
        tokens, answers = draw(64, rng)
        loss = F.cross_entropy(model(tokens).logits[:, -1], answers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            with torch.no_grad():
                said_yes = model(held_out[0]).logits[:, -1, [YES, NO]].argmax(1) == 0
            accuracy = (said_yes == (held_out[1] == YES)).float().mean().item()
            print(f"step {step}: loss {loss.item():.3f}, held-out accuracy {accuracy:.3f}", flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
