"""One GRPO optimiser step against one PPO iteration of this project's trainers, on the same answers.

    python benchmarks/rl_step.py --size tiny --batch 64 --micro-batch 16 --num-generations 8
    python benchmarks/rl_step.py --size gpt2 --batch 64 --micro-batch 16 --response-length 16 --iterations 4 \
        --out runs/rl-step-gpt2.json

Both take `--batch` answers of at most `--response-length` tokens per update, with the same policy, reward model,
prompts and micro-batch (ppo_assets.py: random weights, no download):
  * PPO (`ppo.train.build_trainer`, ppo_sides.py `run_ours`): one answer per question, the reference, value and
    reward forwards, GAE, `--ppo-epochs` passes of clipped policy and value updates;
  * GRPO (`grpo.train.build_trainer`, grpo_side.py): `--num-generations` answers per question, the reference and
    reward forwards, group-normalised advantages, one pass (TRL's `num_iterations: 1`), no value model.
The split: generation (sampling), scoring (reference log-probs, reward, and PPO's values), update (loss passes,
backward and optimiser steps), rest. Each side runs in a fresh process for `--iterations` updates; the first is
warm-up, the others are timed (mean).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from ppo_assets import prepare_assets
from timing import on_cuda

PHASES = ("generation", "scoring", "update", "rest", "iteration")
PASSED = ("size", "batch", "micro_batch", "rollout_batch", "response_length", "ppo_epochs", "num_generations")
PASSED += ("temperature", "iterations", "vision_inputs", "seed")


def run_side(args, side: str, work: Path) -> dict:
    out = work / f"{side}.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--work", str(work)]
    for name in PASSED:
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    subprocess.run(argv, check=True)
    return json.loads(out.read_text())


def child(args) -> None:
    import vlm  # noqa: F401  (registers the Auto classes)

    work = Path(args.work)
    if args.side == "ppo":
        import math

        from ppo_sides import run_ours

        args.missing_eos_penalty, args.keep_guards = 1.0, False
        result = run_ours(args, work)
        assert math.isfinite(result["mean"]["iteration"])
    else:
        from grpo_side import run_grpo

        result = run_grpo(args, work)
    (work / f"{args.side}.json").write_text(json.dumps(result, default=str))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "gpt2"), default="tiny")
    parser.add_argument("--batch", type=int, default=64, help="answers per update (one process)")
    parser.add_argument("--micro-batch", type=int, default=16, help="answers per forward; the rest accumulates")
    parser.add_argument("--rollout-batch", type=int, default=64, help="PPO's rollout forward batch, GRPO's scoring")
    parser.add_argument("--response-length", type=int, default=8)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=8, help="GRPO's answers per question")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--iterations", type=int, default=3, help="updates per side; the first is warm-up")
    parser.add_argument("--vision-inputs", choices=("features", "pixels"), default="features")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the figures here (JSON)")
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=("ppo", "grpo"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch % args.micro_batch or args.batch % args.num_generations:
        parser.error("--batch must be a multiple of --micro-batch and of --num-generations")
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if on_cuda() else "no"
    if args.side:
        return child(args)

    device = torch.cuda.get_device_name() if on_cuda() else f"cpu ({torch.get_num_threads()} threads)"
    work = Path(tempfile.mkdtemp(prefix="rl-step-"))
    try:
        prepare_assets(args.size, work / "assets", args.batch, args.seed)
        started = time.perf_counter()
        sides = {side: run_side(args, side, work) for side in ("ppo", "grpo")}
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ppo, grpo = sides["ppo"]["mean"], sides["grpo"]["mean"]
    print(
        f"{args.size}: {device}; {args.batch} answers per update (micro-batch {args.micro_batch}), at most "
        f"{args.response_length} tokens; PPO {args.ppo_epochs} epochs, GRPO {args.num_generations} answers per "
        f"question, 1 pass; images as {args.vision_inputs}; mean of {args.iterations - 1} timed update(s)"
    )
    print(f"{'phase':<12}{'PPO s':>10}{'GRPO s':>10}{'GRPO/PPO':>10}")
    for phase in PHASES:
        a, b = ppo.get(phase, 0.0), grpo.get(phase, 0.0)
        print(f"{phase:<12}{a:>10.4f}{b:>10.4f}{(b / a if a > 1e-6 else float('nan')):>9.2f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        report = {
            "device": device,
            "settings": vars(args),
            "seconds": seconds,
            "ppo": sides["ppo"],
            "grpo": sides["grpo"],
        }
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
