"""Where the label budget goes: active selection and gold filtering, measured with simulated annotators.

    python benchmarks/active_labeling.py --sft runs/demo/models/sft --data runs/demo/data --seeds 0 1 2 \
        --budget 1500 --pool 2000 --out runs/bench-active/results.json

For each seed, the same total budget (two rounds of `--budget` answers, each + a 10 % random slice) is spent:
  * random: both rounds a random draw from a fresh pool of sampled answers;
  * active: round 1 the answers whose samples disagree most, then a reward model trained on them picks the
    round-2 answers it is least sure of (P(correct) nearest 0.5), as `pipeline` does with `label_rounds: 2`;
and, with one of the three annotators at a 30 % error rate (`--bad_error_rate`) and `--gold_rate` gold answers:
  * clean: all three annotators at `--error_rate`; noisy: one bad annotator, no filter; filtered: the same labels,
    the reward model dropping annotators below `--min_gold_accuracy` gold accuracy.
Every reward model is measured the same way: its agreement with the true correctness (VQA accuracy >= 0.5) of
the SFT model's sampled answers to the val split, images no model trained on. Prints mean +- std over the seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

import torch

from labeling.generate import GenerateConfig, generate
from labeling.simulate import SimulateConfig, simulate
from reward.config import RewardConfig
from reward.train import train as train_reward
from vlm.data.images import load_image
from vlm.data.vqa import load_vqa
from vlm.eval.metrics import vqa_accuracy
from vlm.labels.answers import read_answers
from vlm.labels.gold import gold_key_path
from vlm.model.reward_scoring import load_reward_model, score_answers


def _pool(args, out: Path, seed: int, select: str | None, store: Path | None = None, rm: Path | None = None) -> Path:
    answers = out / "answers.jsonl"
    if not answers.is_file():
        generate(
            GenerateConfig(
                model=args.sft,
                data=args.data,
                split="train2014",
                questions=args.pool,
                samples=4,
                out=str(answers),
                seed=seed,
                select=select,
                budget=args.budget if select else None,
                random_fraction=0.1,
                reward_model=str(rm) if rm else None,
                skip_labelled=str(store) if store else None,
                max_new_tokens=8,
            )
        )
    return answers


def _label(answers: Path, store: Path, seed: int, error_rates: str, gold_rate: float = 0.0) -> None:
    simulate(
        SimulateConfig(
            answers=str(answers),
            store=str(store),
            annotators=3,
            per_answer=2,
            error_rates=error_rates,
            gold_rate=gold_rate,
            seed=seed,
        )
    )


def _reward(args, store: Path, out: Path, seed: int, **extra) -> Path:
    if not (out / "summary.json").is_file():
        cfg = RewardConfig(
            init_from=args.sft,
            label_store=str(store),
            output_dir=str(out),
            learning_rate=1e-4,
            num_train_epochs=3,
            per_device_train_batch_size=32,
            per_device_eval_batch_size=128,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            min_labels=args.min_labels,
            eval_fraction=args.eval_fraction,
            cache_vision_features=True,
            vision_feature_cache=str(Path(args.work) / "cache"),
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=seed,
            **extra,
        )
        train_reward(cfg)
    return out


def _val_set(args) -> list[dict]:
    """The SFT model's sampled answers to val questions, with their true correctness."""
    out = Path(args.work) / "val"
    answers = out / "answers.jsonl"
    if not answers.is_file():
        generate(
            GenerateConfig(
                model=args.sft,
                data=args.data,
                split="val2014",
                questions=10**6,
                samples=2,
                out=str(answers),
                seed=12345,
                max_new_tokens=8,
            )
        )
    truth = {q["question_id"]: q["answers"] for q in load_vqa(args.data, "val2014")}
    records = read_answers(answers)
    for r in records:
        r["truth"] = int(vqa_accuracy(r["answer"], truth[r["question_id"]]) >= 0.5)
    return records


def agreement_with_truth(rm_dir: Path, val: list[dict]) -> float:
    model, processor = load_reward_model(rm_dir)
    images = [load_image(r["image"]) for r in val]
    logits = score_answers(model, processor, images, [r["question"] for r in val], [r["answer"] for r in val], 128)
    predicted = (logits >= 0).long()
    return float((predicted == torch.tensor([r["truth"] for r in val])).float().mean())


def run_seed(args, seed: int, val: list[dict]) -> dict:
    root = Path(args.work) / f"seed-{seed}"
    clean = f"{args.error_rate},{args.error_rate},{args.error_rate}"
    results = {}

    # Random vs active selection, the same two budgets.
    store = root / "random" / "store"
    for r in (1, 2):
        _label(_pool(args, root / "random" / f"round-{r}", 100 * seed + r, "random", store), store, seed, clean)
    results["random"] = agreement_with_truth(_reward(args, store, root / "random" / "rm", seed), val)

    store = root / "active" / "store"
    _label(_pool(args, root / "active" / "round-1", 100 * seed + 1, "disagreement", store), store, seed, clean)
    rm1 = _reward(args, store, root / "active" / "rm-1", seed)
    _label(_pool(args, root / "active" / "round-2", 100 * seed + 2, "uncertainty", store, rm1), store, seed, clean)
    results["active"] = agreement_with_truth(_reward(args, store, root / "active" / "rm", seed), val)

    # One bad annotator: none vs gold filtering (the same labels), against all-good annotators.
    bad = f"{args.error_rate},{args.error_rate},{args.bad_error_rate}"
    for name, rates in (("clean", clean), ("noisy", bad)):
        store = root / name / "store"
        answers = _pool(args, root / name / "round-1", 100 * seed + 1, "random")
        _label(answers, store, seed, rates, args.gold_rate)
        results[name] = agreement_with_truth(_reward(args, store, root / name / "rm", seed), val)
    gold = [str(gold_key_path(root / "noisy" / "round-1" / "answers.jsonl"))]
    filtered = _reward(
        args,
        root / "noisy" / "store",
        root / "noisy" / "rm-filtered",
        seed,
        gold=gold,
        min_gold_accuracy=args.min_gold_accuracy,
    )
    results["filtered"] = agreement_with_truth(filtered, val)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", default="runs/demo/models/sft")
    parser.add_argument("--data", default="runs/demo/data")
    parser.add_argument("--work", default="runs/bench-active")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=1500, help="answers labelled per round (x2 rounds)")
    parser.add_argument("--pool", type=int, default=2000, help="questions sampled per round (4 answers each)")
    parser.add_argument("--error_rate", type=float, default=0.1)
    parser.add_argument("--bad_error_rate", type=float, default=0.3)
    parser.add_argument("--gold_rate", type=float, default=0.1)
    parser.add_argument("--min_gold_accuracy", type=float, default=0.8)
    parser.add_argument("--min_labels", type=int, default=100)
    parser.add_argument("--eval_fraction", type=float, default=0.1, help="the RM's own split (the measure is val)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    val = _val_set(args)
    per_seed = {seed: run_seed(args, seed, val) for seed in args.seeds}
    names = ("random", "active", "clean", "noisy", "filtered")
    summary = {n: [per_seed[s][n] for s in args.seeds] for n in names}
    print(f"RM agreement with the true correctness on {len(val)} sampled val answers, {len(args.seeds)} seeds:")
    for n in names:
        values = summary[n]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        each = ", ".join(f"{100 * v:.1f}" for v in values)
        print(f"  {n:<9} {100 * statistics.mean(values):5.1f} % +- {100 * std:.1f}   ({each})")
    gain = [a - r for a, r in zip(summary["active"], summary["random"])]
    lost = [c - n for c, n in zip(summary["clean"], summary["noisy"])]
    recovered = [f - n for f, n in zip(summary["filtered"], summary["noisy"])]
    print(f"active - random: {100 * statistics.mean(gain):+.1f} points (target >= +3)")
    print(
        f"lost to the bad annotator: {100 * statistics.mean(lost):.1f} points; "
        f"recovered by gold filtering: {100 * statistics.mean(recovered):.1f} points (target: >= half)"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps({"args": vars(args), "per_seed": per_seed, "val_answers": len(val)}, indent=2)
        )


if __name__ == "__main__":
    main()
