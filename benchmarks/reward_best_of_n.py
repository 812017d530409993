"""What a reward model is worth to RL on images it never saw: best-of-n and within-question pair accuracy on a held-out
split, overall and per question type (`vlm/eval/best_of_n.py`). PPO's own reward check measures the same on its
training prompts; this is the held-out figure.

    python benchmarks/reward_best_of_n.py --policy runs/demo/models/sft/checkpoint-500 \
        --reward_model runs/demo/models/reward --data runs/demo/data --split dev2014 --out runs/bench-bon.json

The policy samples `--n` answers per question at `--temperature` (PPO's, by default the demo's 0.7); the reward
model picks one; greedy, a random sample and the truth's pick stand beside it. Overall figures (pair accuracy,
ROC-AUC against the truth over every sample) pool the question types' samples.
"""

import argparse
import json
import logging
from pathlib import Path

import torch

from vlm.data.images import load_image
from vlm.data.vqa import load_vqa
from vlm.eval.best_of_n import sample_and_score, summarise
from vlm.model.builder import load_vlm
from vlm.model.reward_scoring import load_reward_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", required=True)
    ap.add_argument("--reward_model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="dev2014", help="held-out questions (choose settings here, not on val)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    policy, processor = load_vlm(args.policy)
    policy.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    reward_model, reward_processor = load_reward_model(args.reward_model, "--reward_model")
    vqa = load_vqa(args.data, args.split, limit=args.limit, require_annotations=True)
    by_type: dict[str, dict] = {}
    sampled = []
    for kind in sorted(set(vqa["question_type"])):
        rows = vqa.filter(lambda r, kind=kind: r["question_type"] == kind)
        torch.manual_seed(args.seed)
        sampled.append(
            sample_and_score(
                policy,
                processor,
                reward_model,
                reward_processor,
                [load_image(p) for p in rows["image_path"]],
                rows["question"],
                rows["answers"],
                n=args.n,
                temperature=args.temperature,
            )
        )
        by_type[kind] = summarise(*sampled[-1])
        logging.info("%s: %s", kind, {k: round(v, 4) if isinstance(v, float) else v for k, v in by_type[kind].items()})
    overall = summarise(*(torch.cat(parts) for parts in zip(*sampled)))
    report = {"policy": args.policy, "reward_model": args.reward_model, "split": args.split, "n": args.n}
    report |= {"temperature": args.temperature, "overall": overall, "by_question_type": by_type}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(overall, indent=1))  # noqa: T201 (a script)


if __name__ == "__main__":
    main()
