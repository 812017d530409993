"""Where the label budget goes: active selection and gold filtering, measured with simulated annotators.

    python benchmarks/active_labeling.py --sft runs/demo/models/sft --data runs/demo/data --split feedback2014 \
        --eval_split dev2014 --seeds 0 1 2 --budget 1500 --pool 2000 --out runs/bench-active/results.json

For each seed, the same total budget (two rounds of about `--budget` answers, each + a 10 % random slice, chosen
`--select_by` question (default) or answer from `--split`) is spent:
  * random: both rounds a random draw from a fresh pool of sampled answers;
  * active: round 1 the questions whose samples disagree most, then a reward model trained on them picks the
    round-2 questions (answers) it is least sure of, as `pipeline` does with `label_rounds: 2`;
and, with one of the three annotators at a 30 % error rate (`--bad_error_rate`) and `--gold_rate` gold answers:
  * clean: all three annotators at `--error_rate`; noisy: one bad annotator, no filter; filtered: the same labels,
    the reward model dropping annotators below `--min_gold_accuracy` gold accuracy.
Every reward model is measured the same way on 4 sampled answers of the SFT model to each `--eval_split` question
(images no model trained on; choose settings on dev2014, not on the val split you report): its agreement with the
true correctness (VQA accuracy >= 0.5), and its pair accuracy, how often it ranks the truly correct of two answers to
one question above the incorrect one. `--parts` runs the selection comparison, the gold filtering, or both. Prints
mean +- std over the seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

import torch
from transformers import AutoProcessor

from labeling.generate import GenerateConfig, generate
from labeling.simulate import SimulateConfig, simulate
from reward.config import RewardConfig
from reward.train import train as train_reward
from vlm.data.images import load_image
from vlm.data.vqa import load_vqa
from vlm.eval.best_of_n import within_question_pair_accuracy
from vlm.eval.metrics import vqa_accuracy
from vlm.labels.answers import read_answers
from vlm.labels.gold import gold_key_path
from vlm.model.modeling_vlm import VLMForAnswerLikelihood
from vlm.model.reward_scoring import load_reward_model, score_answers


def _pool(args, out: Path, seed: int, select: str | None, store: Path | None = None, rm: Path | None = None) -> Path:
    answers = out / "answers.jsonl"
    if not answers.is_file():
        generate(
            GenerateConfig(
                model=args.sft,
                data=args.data,
                split=args.split,
                questions=args.pool,
                samples=4,
                out=str(answers),
                seed=seed,
                select=select,
                select_by=args.select_by,
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
    """The SFT model's sampled answers to the held-out questions, with their true correctness."""
    out = Path(args.work) / f"eval-{args.eval_split}"
    answers = out / "answers.jsonl"
    if not answers.is_file():
        generate(
            GenerateConfig(
                model=args.sft,
                data=args.data,
                split=args.eval_split,
                questions=10**6,
                samples=4,
                out=str(answers),
                seed=12345,
                max_new_tokens=8,
            )
        )
    truth = {q["question_id"]: q["answers"] for q in load_vqa(args.data, args.eval_split)}
    records = read_answers(answers)
    for r in records:
        r["truth"] = int(vqa_accuracy(r["answer"], truth[r["question_id"]]) >= 0.5)
    return records


def _scores_and_pairs(model, processor, val: list[dict]) -> tuple[torch.Tensor, float, int]:
    """The model's score of every answer, and its pair accuracy (and pair count) within questions."""
    images = [load_image(r["image"]) for r in val]
    with torch.no_grad():
        logits = score_answers(model, processor, images, [r["question"] for r in val], [r["answer"] for r in val], 128)
    truth = [r["truth"] for r in val]
    return logits, *within_question_pair_accuracy(logits.tolist(), truth, [r["question_id"] for r in val])


def measure(rm_dir: Path, val: list[dict]) -> dict:
    """Agreement with the true correctness, and pair accuracy within questions."""
    model, processor = load_reward_model(rm_dir)
    logits, pair_accuracy, pairs = _scores_and_pairs(model, processor, val)
    truth = torch.tensor([r["truth"] for r in val])
    return {
        "agreement": float(((logits >= 0).long() == truth).float().mean()),
        "pair_accuracy": pair_accuracy,
        "pairs": pairs,
    }


def policy_pair_accuracy(sft: str, val: list[dict]) -> float:
    """Pair accuracy of the SFT policy's own answer log-likelihood, before any label: the likelihood readout's
    start (its scale 1, bias 0), so what the labels add over it shows."""
    model = VLMForAnswerLikelihood.from_pretrained(sft).eval()
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    return _scores_and_pairs(model, AutoProcessor.from_pretrained(sft), val)[1]


def run_seed(args, seed: int, val: list[dict]) -> dict:
    root = Path(args.work) / f"seed-{seed}"
    clean = f"{args.error_rate},{args.error_rate},{args.error_rate}"
    results = {}
    if "selection" in args.parts:  # random vs active selection, the same two budgets
        store = root / "random" / "store"
        for r in (1, 2):
            _label(_pool(args, root / "random" / f"round-{r}", 100 * seed + r, "random", store), store, seed, clean)
        results["random"] = measure(_reward(args, store, root / "random" / "rm", seed), val)

        store = root / "active" / "store"
        _label(_pool(args, root / "active" / "round-1", 100 * seed + 1, "disagreement", store), store, seed, clean)
        rm1 = _reward(args, store, root / "active" / "rm-1", seed)
        _label(_pool(args, root / "active" / "round-2", 100 * seed + 2, "uncertainty", store, rm1), store, seed, clean)
        results["active"] = measure(_reward(args, store, root / "active" / "rm", seed), val)
    if "gold" in args.parts:  # one bad annotator: none vs gold filtering (the same labels), against all-good ones
        bad = f"{args.error_rate},{args.error_rate},{args.bad_error_rate}"
        for name, rates in (("clean", clean), ("noisy", bad)):
            store = root / name / "store"
            answers = _pool(args, root / name / "round-1", 100 * seed + 1, "random")
            _label(answers, store, seed, rates, args.gold_rate)
            results[name] = measure(_reward(args, store, root / name / "rm", seed), val)
        gold = [str(gold_key_path(root / "noisy" / "round-1" / "answers.jsonl"))]
        filtered = _reward(
            args,
            root / "noisy" / "store",
            root / "noisy" / "rm-filtered",
            seed,
            gold=gold,
            min_gold_accuracy=args.min_gold_accuracy,
        )
        results["filtered"] = measure(filtered, val)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", default="runs/demo/models/sft")
    parser.add_argument("--data", default="runs/demo/data")
    parser.add_argument("--split", default="train2014", help="where the labelled answers come from")
    parser.add_argument("--eval_split", default="val2014", help="where the reward models are measured")
    parser.add_argument("--select_by", default="question", choices=["question", "answer"])
    parser.add_argument("--parts", nargs="+", default=["selection", "gold"], choices=["selection", "gold"])
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
    names = [n for n in ("random", "active", "clean", "noisy", "filtered") if n in per_seed[args.seeds[0]]]
    print(f"Reward models on {len(val)} sampled {args.eval_split} answers, {len(args.seeds)} seeds:")  # noqa: T201
    for metric in ("agreement", "pair_accuracy"):
        for n in names:
            values = [per_seed[s][n][metric] for s in args.seeds]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            each = ", ".join(f"{100 * v:.1f}" for v in values)
            print(f"  {metric:<13} {n:<9} {100 * statistics.mean(values):5.1f} % +- {100 * std:.1f}   ({each})")  # noqa: T201

    def mean_difference(a: str, b: str, metric: str) -> float:
        return 100 * statistics.mean(per_seed[s][a][metric] - per_seed[s][b][metric] for s in args.seeds)

    no_labels = policy_pair_accuracy(args.sft, val) if "selection" in args.parts else None
    if "selection" in args.parts:
        print(f"  pair_accuracy no labels (the SFT policy's likelihood) {100 * no_labels:5.1f} %")  # noqa: T201
        print(  # noqa: T201
            f"active - random: {mean_difference('active', 'random', 'pair_accuracy'):+.1f} points of pair accuracy "
            f"(target >= +3), {mean_difference('active', 'random', 'agreement'):+.1f} of agreement"
        )
    if "gold" in args.parts:
        print(  # noqa: T201
            f"lost to the bad annotator: {mean_difference('clean', 'noisy', 'agreement'):.1f} points; recovered by "
            f"gold filtering: {mean_difference('filtered', 'noisy', 'agreement'):.1f} points (target: >= half)"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "per_seed": per_seed,
                    "no_labels_pair_accuracy": no_labels,
                    "val_answers": len(val),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
