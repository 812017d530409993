"""PPO and GRPO from one start against three rewards, side by side: the oracle (the sampled answer's VQA accuracy, no
reward model), the reward model alone (ground-truth weight 0: the path of a user with new images), and the reward
model + the VQA-accuracy bonus (LLaVA-RLHF's).

    python benchmarks/rl_reward_sources.py --start runs/demo/models/sft/checkpoint-500 \
        --reward_model runs/demo/models/reward --data runs/demo/data --eval_split dev2014 --eval_limit 500 \
        --report_split val2014 --out runs/bench-rl-rewards
    python benchmarks/rl_reward_sources.py ... --arms rm_only grpo_rm_only --parallel 2   # PPO against GRPO

Each arm is `python -m ppo --config configs/demo/ppo.yaml` (`grpo_*` arms: `-m grpo --config
configs/demo/grpo.yaml`; `--ppo_config`, `--grpo_config` to change) with the same start, seed and prompts, one
thread each, `--parallel` arms at a time (give PPO and GRPO the same share of the machine to compare their wall
times), its held-out evaluation (the curve and its `best/`) on `--data`'s `--eval_split`. Then `vlm-rlhf eval`
scores the start and each arm's final policy per question type on `--report_split` (default: the same split): choose
settings with `--eval_split dev2014`, and give `--report_split val2014` to report val once. Writes `<out>/report.md`
(the table that goes to docs/results.md) and `<out>/results.json`; arms already finished are not rerun. Extra
`--key value` pairs go to every arm.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vlm.data.errors import DataError
from vlm.data.vqa import load_vqa

REWARDS = {
    "oracle": ["--ground_truth_weight", "1.0"],
    "rm_only": ["--ground_truth_weight", "0.0", "--reward_model_path", "{rm}"],
    "rm_bonus": ["--ground_truth_weight", "1.0", "--reward_model_path", "{rm}"],
}
ARMS = [*REWARDS, *(f"grpo_{name}" for name in REWARDS)]


def _stage(name: str) -> str:
    return "grpo" if name.startswith("grpo_") else "ppo"


def _arm_command(args, name: str, out: Path, extra: list[str]) -> list[str]:
    flags = [f.format(rm=args.reward_model) for f in REWARDS[name.removeprefix("grpo_")]]
    stage = _stage(name)
    config = args.grpo_config if stage == "grpo" else args.ppo_config
    return [
        sys.executable, "-m", stage, "--config", config, "--sft_model_path", args.start,
        "--data_dir", args.data, "--eval_split", args.eval_split, "--eval_limit", str(args.eval_limit),
        "--output_dir", str(out / name), "--vision_feature_cache", str(out / "cache"), *flags, *extra,
    ]  # fmt: skip


def _check_splits(args) -> None:
    """Refuse, in one line, a split that `--data` lacks before any arm runs (the arms take up to hours)."""
    for split in dict.fromkeys([args.eval_split, args.report_split]):
        try:
            load_vqa(args.data, split, None, 1, require_annotations=True)
        except DataError as e:
            sys.exit(f"rl_reward_sources: {e}")


def _run_arms(args, out: Path, extra: list[str]) -> dict[str, float]:
    """Runs the unfinished arms, `--parallel` at a time; returns each arm's wall time (s) from its summary."""
    pending = [n for n in args.arms if not (out / n / "summary.json").is_file()]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    while pending:
        batch, pending = pending[: args.parallel], pending[args.parallel :]
        running = []
        for name in batch:
            log = open(out / f"{name}.log", "w")  # noqa: SIM115 (closed below, after the process ends)
            running.append(
                (name, log, subprocess.Popen(_arm_command(args, name, out, extra), stdout=log, stderr=log, env=env))
            )
        for name, log, process in running:
            if process.wait() != 0:
                sys.exit(f"arm {name} failed (exit {process.returncode}); see {out / f'{name}.log'}")
            log.close()
    return {n: json.loads((out / n / "summary.json").read_text())["seconds"] for n in args.arms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", required=True, help="the policy every arm starts from")
    ap.add_argument("--reward_model", required=True)
    ap.add_argument("--data", required=True, help="the VQA folder of the prompts (train split)")
    ap.add_argument("--eval_split", default="val2014")
    ap.add_argument("--eval_limit", type=int, default=1490)
    ap.add_argument("--report_split", default=None, help="where the final table is scored (default: --eval_split)")
    ap.add_argument("--report_limit", type=int, default=None, help="its questions (default: --eval_limit)")
    ap.add_argument("--ppo_config", "--config", default="configs/demo/ppo.yaml")
    ap.add_argument("--grpo_config", default="configs/demo/grpo.yaml")
    ap.add_argument("--arms", nargs="+", default=list(REWARDS), choices=ARMS)
    ap.add_argument("--parallel", type=int, default=2, help="arms run at once, one thread each")
    ap.add_argument("--out", required=True)
    args, extra = ap.parse_known_args()
    args.report_split = args.report_split or args.eval_split
    args.report_limit = args.report_limit or args.eval_limit
    _check_splits(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    seconds = _run_arms(args, out, extra)
    names = ["start", *args.arms]
    models = [args.start, *(str(out / n) for n in args.arms)]
    report = out / f"eval-{args.report_split}"
    if not (report / "eval.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "vlm.cli", "eval", "--model", *models, "--name", *names, "--data", args.data,
             "--split", args.report_split, "--limit", str(args.report_limit), "--out", str(report)],
            check=True,
        )  # fmt: skip
    evaluated = {r["name"]: r["metrics"] for r in json.loads((report / "eval.json").read_text())["results"]}
    rows = []
    for name in args.arms:
        summary = json.loads((out / name / "summary.json").read_text())
        curve = _held_out_curve(out / name, _stage(name))
        rows.append(
            {
                "arm": name,
                "held_out_curve": curve,
                "final": evaluated[name]["accuracy"],
                "best": summary["best"]["metrics"]["vqa_accuracy"] if summary["best"] else None,
                "final_kl": (summary["held_out"]["final"] or {}).get("kl"),
                "per_type": evaluated[name]["accuracy_by_question_type"],
                "seconds": seconds[name],
            }
        )
    start = evaluated["start"]
    results = {
        "report_split": args.report_split,
        "start": start["accuracy"],
        "start_per_type": start["accuracy_by_question_type"],
        "questions": start["questions"],
        "arms": rows,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(_report(results, args))
    print((out / "report.md").read_text())  # noqa: T201 (a script)
    print(f"{time.time() - started:.0f} s")  # noqa: T201


def _held_out_curve(run: Path, stage: str) -> list[float]:
    """The run's held-out VQA accuracy at each evaluation, from its last checkpoint's log history."""
    state, key = (
        ("ppo_state.json", "eval/vqa_accuracy") if stage == "ppo" else ("trainer_state.json", "eval_vqa_accuracy")
    )
    last = max(run.glob(f"checkpoint-*/{state}"), key=lambda p: int(p.parent.name.split("-")[1]))
    return [h[key] for h in json.loads(last.read_text())["log_history"] if key in h]


def _report(results: dict, args) -> str:
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    types = list(results["start_per_type"])
    lines = [
        f"Start `{args.start}`, reward model `{args.reward_model}`, data `{args.data}`; each run's held-out curve "
        f"and `best/` on {args.eval_split} ({args.eval_limit} questions at most), the table's final figures on "
        f"{args.report_split} ({results['questions']} questions); configs `{args.ppo_config}`, `{args.grpo_config}`.",
        "",
        f"| arm | {args.eval_split} at each evaluation | final | gain | best | final KL | "
        + " | ".join(types) + " | s |",
        "|---|---|---|---|---|---|" + "---|" * len(types) + "---|",
        f"| start | | {pct(results['start'])} | | | | "
        + " | ".join(pct(results["start_per_type"][t]) for t in types) + " | |",
    ]  # fmt: skip
    for r in results["arms"]:
        curve = " / ".join(pct(x) for x in r["held_out_curve"])
        best = pct(r["best"]) if r["best"] is not None else "–"
        kl = f"{r['final_kl']:.2f}" if r["final_kl"] is not None else "–"
        per_type = " | ".join(pct(r["per_type"][t]) for t in types)
        gain = f"{100 * (r['final'] - results['start']):+.1f}"
        lines.append(
            f"| {r['arm']} | {curve} | {pct(r['final'])} | {gain} | {best} | {kl} | {per_type} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
