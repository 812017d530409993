"""How a reward model's ranking grows with its labels: nested draws of whole questions from one large labeling round,
a reward model trained on each by one reward config, and each measured on images none of them saw
(`reward_best_of_n.py`: best-of-n, within-question pair accuracy and ROC-AUC over the policy's samples).

    vlm-rlhf label round --config configs/demo/labeling.yaml --model runs/demo/models/sft --data_dir runs/demo/data \
        --output_dir runs/bench-labels/round --round 1 --questions 22000 --budget 30000
    python benchmarks/reward_label_budget.py --labels runs/bench-labels/round --sft runs/demo/models/sft \
        --policy runs/demo/models/sft/checkpoint-500 --data runs/demo/data --split dev2014 \
        --shares 0.125 0.25 0.5 1 --out runs/bench-labels

A draw takes every labelled answer of the questions it keeps (the reward model learns to rank answers to one
question), so it holds about `share` x the round's labels; a smaller draw is part of every larger one (one seeded
order of the questions). `--labels` is a label round's `--output_dir` (its `store/` and every round's gold key).
Extra `--key value` pairs go to every `reward train`. Writes `<out>/results.json` and `<out>/report.md`; draws
already measured are not rerun.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import subprocess
import sys
from pathlib import Path

from vlm.labels.store import LabelStore


@functools.cache
def _round_labels(labels: Path, seed: int) -> tuple[list[dict], list]:
    """The round's labels (read once for every draw) and its questions in one seeded order."""
    rows = LabelStore(labels / "store").latest()
    questions = sorted({r["question_id"] for r in rows})
    random.Random(seed).shuffle(questions)
    return rows, questions


def _draw(labels: Path, share: float, seed: int, out: Path) -> Path:
    """A label store of the round's labels on the first `share` of its questions."""
    store = out / "store"
    if not store.is_dir():
        rows, questions = _round_labels(labels, seed)
        kept = set(questions[: round(share * len(questions))])
        LabelStore(store).append(r for r in rows if r["question_id"] in kept)
    return store


def _run(argv: list[str], what: str) -> None:
    """A step as its own process; a failure ends the benchmark in one line under the step's own error."""
    done = subprocess.run(argv)
    if done.returncode:
        sys.exit(f"reward_label_budget: {what} failed (exit code {done.returncode}); its error is above")


def _measure(args, share: float, extra: list[str]) -> dict:
    out = Path(args.out) / f"share-{share:g}"
    store = _draw(Path(args.labels), share, args.seed, out)
    gold = sorted(str(p) for p in Path(args.labels).glob("round-*/answers.gold.jsonl"))
    rm = out / "reward"
    if not (rm / "summary.json").is_file():
        _run(
            [sys.executable, "-m", "vlm.cli", "reward", "train", "--config", args.reward_config, "--init_from",
             args.sft, "--label_store", str(store), "--gold", *gold, "--output_dir", str(rm), *extra],
            f"reward train on {store}",
        )  # fmt: skip
    best = out / f"best-of-n-{args.split}.json"
    if not best.is_file():
        _run(
            [sys.executable, str(Path(__file__).with_name("reward_best_of_n.py")), "--policy", args.policy,
             "--reward_model", str(rm), "--data", args.data, "--split", args.split, "--out", str(best)],
            f"best-of-n of {rm}",
        )  # fmt: skip
    summary = json.loads((rm / "summary.json").read_text())
    report = json.loads(best.read_text())
    held_out = summary["held_out"]
    return {
        "share": share,
        "answers": summary["labels"]["answers"],
        "train_answers": summary["labels"]["train_answers"],
        "held_out_auc_truth": (held_out.get("truth") or {}).get("roc_auc"),
        "held_out_pairs": held_out.get("pairs"),
        "overall": report["overall"],
        "by_question_type": {t: f["pair_accuracy"] for t, f in report["by_question_type"].items()},
    }


def _report(rows: list[dict], args) -> str:
    types = list(rows[0]["by_question_type"])
    lines = [
        f"Labels `{args.labels}`, reward models from `{args.sft}` by `{args.reward_config}`; best-of-"
        f"{rows[0]['overall']['n']} of `{args.policy}` on {args.split} ({rows[0]['overall']['questions']} questions).",
        "",
        "| share | labelled answers | held-out labels: AUC / pair accuracy (pairs) | greedy | best-of-n by the RM | "
        "pair accuracy ± se | ROC-AUC | " + " | ".join(types) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(types),
    ]
    for r in rows:
        o, pairs = r["overall"], r["held_out_pairs"] or {}
        auc = f"{r['held_out_auc_truth']:.3f}" if r["held_out_auc_truth"] is not None else "–"
        held = f"{auc} / {pairs.get('accuracy', float('nan')):.3f} ({pairs.get('pairs', 0)})"
        lines.append(
            f"| {r['share']:g} | {r['answers']} | {held} | {100 * o['greedy']:.1f} | "
            f"{100 * o['best_of_n_by_reward']:.1f} | {o['pair_accuracy']:.3f} ± {o['pair_accuracy_se']:.3f} | "
            f"{o['roc_auc']:.3f} | " + " | ".join(f"{r['by_question_type'][t]:.2f}" for t in types) + " |"
        )
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", required=True, help="a label round's --output_dir (store/ and round-*/)")
    ap.add_argument("--sft", required=True, help="the policy the reward models start from")
    ap.add_argument("--policy", required=True, help="the policy whose samples are ranked (PPO's start)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="dev2014", help="held-out questions (choose settings here, not on val)")
    ap.add_argument("--shares", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0])
    ap.add_argument("--reward_config", default="configs/demo/reward.yaml")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args, extra = ap.parse_known_args()
    if not (Path(args.labels) / "store").is_dir():
        sys.exit(f"reward_label_budget: {args.labels}/store: no label store (give a label round's --output_dir)")
    rows = [_measure(args, share, extra) for share in sorted(args.shares)]
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    (out / "report.md").write_text(_report(rows, args))
    print((out / "report.md").read_text())  # noqa: T201 (a script)


if __name__ == "__main__":
    main()
