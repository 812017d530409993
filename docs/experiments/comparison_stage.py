"""Experiment for docs/results.md ("Stage 1: left/right through written-out places"): the comparison stage of
`vlm-rlhf pretrain-base` (`vlm/synthetic/comparison_pretraining.py`) run alone from the shipped base, for trying its
curriculum without rebuilding the tower and the descriptions. Logs held-out accuracy on 600 other scenes' questions,
plain and with the columns written, and how often both columns are written right, every 250 steps; saves the model
for `vlm-rlhf sft --init_from`. The runs recorded before commit 9b8071d used this script's own loop (a 50-step linear
warm-up, then constant, as now).

    python docs/experiments/comparison_stage.py --out runs/base-compare --left_steps 1000 --hold 1000 \
        --ramp 2000 --tail 0 --describe_share 0.5
"""

import argparse
import json
import logging

import torch

from vlm.model.builder import load_vlm, save_vlm
from vlm.synthetic.base_model import SHIPPED
from vlm.synthetic.comparison_pretraining import pretrain_on_comparisons


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--left_steps", type=int, default=1000, help="every question asked with 'left'")
    ap.add_argument("--hold", type=int, default=1000, help="both relation words, columns written")
    ap.add_argument("--ramp", type=int, default=2000, help="steps over which the columns are dropped")
    ap.add_argument("--tail", type=int, default=0, help="plain questions at the end")
    ap.add_argument("--pool", type=int, default=20000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--describe_share", type=float, default=0.5, help="share of each batch that is descriptions")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(0)
    model, processor = load_vlm(SHIPPED)
    report = pretrain_on_comparisons(
        model,
        processor,
        args.left_steps,
        args.hold,
        args.ramp,
        args.tail,
        pool_scenes=args.pool,
        learning_rate=args.lr,
        describe_share=args.describe_share,
    )
    print(json.dumps({k: v for k, v in report.items() if k != "loss_curve"}, indent=1))  # noqa: T201 (a script)
    save_vlm(model.cpu(), processor, args.out)


if __name__ == "__main__":
    main()
