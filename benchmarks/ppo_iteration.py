"""One PPO iteration of the image-conditioned trainer against one of TRL's text-only `PPOTrainer`.

    python benchmarks/ppo_iteration.py --size tiny --batch 16 --micro-batch 8 --rollout-batch 16
    python benchmarks/ppo_iteration.py --size gpt2 --batch 64 --micro-batch 16 --rollout-batch 64 \
        --response-length 16 --iterations 5 --out runs/ppo-gpt2.json
    python benchmarks/ppo_iteration.py --size tiny --prepare-only runs/ppo-bench   # assets for `vlm-rlhf ppo`

Both sides run the same GPT-2 config (`--size tiny`: the test preset; `--size gpt2`: GPT-2 small, 12x768, with a
CLIP ViT-B/32 vision config at 224 px), random weights, no download:
  * ours: `ppo.train.build_trainer` from a saved policy, a reward model (a fresh scalar head on the same VLM, also
    the value model's start) and a synthetic VQA folder, images as cached tower features (or pixels);
  * TRL: `trl.experimental.ppo.PPOTrainer` with an `AutoModelForCausalLM` policy and
    `AutoModelForSequenceClassification` (num_labels=1) value and reward models of the same GPT-2 config, on random
    token prompts exactly as long as ours (image tokens included: the padded width of the timed rollout);
with the same batch, micro-batch / gradient accumulation, rollout forward batch, response length, PPO epochs,
temperature, missing-EOS penalty and stop token (EOS). CUDA runs bf16 mixed precision for both
(ACCELERATE_MIXED_PRECISION=bf16), the CPU fp32.

Each trainer runs in a fresh Python process of its own (TRL's `gc.collect()` calls cost in proportion to the
objects alive in the process) for `--iterations` updates; the first is warm-up, the others are timed (mean). An
iteration is the time between two `on_step_end` callbacks, i.e. one whole pass of the training loop. Its split
comes from timers wrapped around the module functions each loop calls:
  * generation: TRL `batch_generation` and the sampling log-probs taken from its logits; ours
    `generate_responses` (which takes those log-probs itself);
  * scoring (reference, value and reward forwards of the rollout): TRL `forward` without grad, `get_reward` and the
    reference log-probs; ours `forward` outside the update, `scalar_head`, `reward_score` and the reference
    log-probs;
  * update (the PPO epochs): ours `VLMPPOTrainer.optimise`; TRL from its first forward with grad to the metrics'
    first `gather_for_metrics` (its loop is inline); the policy forwards in there count as update;
  * rest: the iteration less the three, with what could be timed of it (feature fetch, answer decoding, VQA
    accuracy, metrics and logging, TRL's `empty_cache` and `gc.collect` calls).
Each timer synchronises CUDA on entry and exit, so asynchronous work lands in the phase that queued it.

By default the trainer's guard rails (log-prob ratio, negative KL, answer collapse) are off: a random policy is not
what they are for, and a fired guard would end the run being timed. The first-minibatch ratio deviation the
ratio guard reads is reported either way (`--keep-guards` leaves the configured tolerances in place).

Files: this script (command line, one process per side, the report); ppo_assets.py (models and data); timing.py
(the phase clock, which fails naming any wrapped function that did not run in a timed iteration); ppo_sides.py
(the two trainers under the clock).
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
from ppo_sides import run_ours, run_trl
from timing import on_cuda


# ----- report ---------------------------------------------------------------------------------------------------
def table(trl: dict, mine: dict, ppo_epochs: int) -> list[str]:
    names = {
        "generation": "generation",
        "scoring": "scoring (ref + value + reward)",
        "update": f"update ({ppo_epochs} PPO epochs)",
        "rest": "rest",
        "feature fetch": "  feature fetch",
        "decode answers": "  decode answers",
        "VQA accuracy": "  VQA accuracy",
        "metrics + log": "  metrics + log",
        "empty_cache": "  empty_cache",
        "gc.collect": "  gc.collect",
        "other": "  other (untimed)",
        "iteration": "iteration",
    }

    def fmt(v):
        return f"{v:.4f}" if v is not None else "-"

    lines = [f"{'phase':<32}{'TRL s':>10}{'ours s':>10}{'ours/TRL':>10}"]
    for key, label in names.items():
        a, b = trl.get(key), mine.get(key)
        if a is None and b is None:
            continue
        ratio = f"{b / a:.2f}x" if a is not None and b is not None and a > 1e-4 else "-"
        lines.append(f"{label:<32}{fmt(a):>10}{fmt(b):>10}{ratio:>10}")
    return lines


PASSED = (
    "size",
    "batch",
    "micro_batch",
    "rollout_batch",
    "response_length",
    "ppo_epochs",
    "temperature",
    "missing_eos_penalty",
    "iterations",
    "vision_inputs",
    "seed",
)


def run_side(args, side: str, work: Path, prompt_length: int | None = None) -> dict:
    """One trainer in a fresh process; its figures come back through a JSON file."""
    out = work / f"{side}.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--work", str(work)]
    for name in PASSED:
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.keep_guards:
        argv.append("--keep-guards")
    if prompt_length is not None:
        argv += ["--prompt-length", str(prompt_length)]
    subprocess.run(argv, check=True)
    return json.loads(out.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "gpt2"), default="tiny")
    parser.add_argument("--batch", type=int, default=16, help="rollouts per update (one process)")
    parser.add_argument("--micro-batch", type=int, default=8, help="per_device_train_batch_size; the rest accumulates")
    parser.add_argument("--rollout-batch", type=int, default=16, help="local_rollout_forward_batch_size")
    parser.add_argument("--response-length", type=int, default=8)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--missing-eos-penalty", type=float, default=1.0)
    parser.add_argument("--iterations", type=int, default=2, help="updates per trainer; the first is warm-up")
    parser.add_argument("--vision-inputs", choices=("features", "pixels"), default="features")
    parser.add_argument("--keep-guards", action="store_true", help="leave the trainer's guard rails on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="folder for the models and data (default: a temporary one)")
    parser.add_argument(
        "--prepare-only",
        default=None,
        metavar="DIR",
        help="write policy, reward model and data to DIR, print a `vlm-rlhf ppo` command, stop",
    )
    parser.add_argument("--out", "--json", dest="out", default=None, help="also write the figures here (JSON)")
    parser.add_argument("--side", choices=("ours", "trl"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prompt-length", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch % args.micro_batch:
        parser.error("--batch must be a multiple of --micro-batch")
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")

    import vlm  # noqa: F401  (registers the Auto classes)

    if args.prepare_only:
        root = Path(args.prepare_only)
        paths = prepare_assets(args.size, root, args.batch, args.seed)
        print(
            f"vlm-rlhf ppo --sft_model_path {paths['policy']} --reward_model_path {paths['reward']} "
            f"--data_dir {paths['data']} --vision_feature_cache {root / 'feature-cache'} "
            f"--output_dir {root / 'ppo'} --total_episodes {args.iterations * args.batch} "
            f"--per_device_train_batch_size {args.micro_batch} "
            f"--gradient_accumulation_steps {args.batch // args.micro_batch} "
            f"--local_rollout_forward_batch_size {args.rollout_batch} --response_length {args.response_length} "
            f"--num_ppo_epochs {args.ppo_epochs} --report_to none --eval_limit 8 --per_device_eval_batch_size 8"
        )
        return

    # TRL's Accelerator reads the launcher's mixed-precision setting only: the same for both trainers.
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if on_cuda() else "no"
    if args.side:  # a child process: one trainer, figures to <work>/<side>.json
        work = Path(args.work)
        result = run_ours(args, work) if args.side == "ours" else run_trl(args, work, args.prompt_length)
        (work / f"{args.side}.json").write_text(json.dumps(result, default=str))
        return

    device = torch.cuda.get_device_name() if on_cuda() else f"cpu ({torch.get_num_threads()} threads)"
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ppo-iteration-"))
    try:
        started = time.perf_counter()
        prepare_assets(args.size, work / "assets", args.batch, args.seed)
        setup_s = time.perf_counter() - started
        mine = run_side(args, "ours", work)
        info = mine.pop("info")
        prompt_length = max(info["prompt_widths"][1:] or info["prompt_widths"])  # the widest timed rollout
        trl = run_side(args, "trl", work, prompt_length)
        trl_info = trl.pop("info")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    text_config = info["text_config"]
    ratio = mine["mean"]["iteration"] / trl["mean"]["iteration"]
    # TRL empties the CUDA cache and runs gc.collect() several times per update; ours does neither.
    trl_housekeeping = trl["mean"].get("empty_cache", 0.0) + trl["mean"].get("gc.collect", 0.0)
    ratio_without = mine["mean"]["iteration"] / (trl["mean"]["iteration"] - trl_housekeeping)
    report = {
        "device": device,
        "precision": "bf16 mixed" if on_cuda() else "fp32",
        "torch": torch.__version__,
        "size": args.size,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work", "prepare_only", "side")},
        "text_model": {k: text_config.get(k) for k in ("n_layer", "n_embd", "n_head", "vocab_size")},
        "image_tokens": info["image_tokens"],
        "prompt_length": prompt_length,
        "setup_s": setup_s,
        "trl": {**trl, "info": trl_info},
        "ours": {**mine, "info": info},
        "iteration_ratio": ratio,
        "iteration_ratio_without_trl_empty_cache_gc": ratio_without,
        "target_ratio": 1.2,
        "target_met": ratio <= 1.2,
    }
    print(
        f"{args.size}: {device}, {report['precision']}; GPT-2 {text_config['n_layer']}x{text_config['n_embd']}, "
        f"vocab {text_config['vocab_size']}; prompt {prompt_length} tokens ({info['image_tokens']} image) + "
        f"{args.response_length} response; batch {args.batch} = {args.micro_batch} x "
        f"{args.batch // args.micro_batch} accumulated, rollout forward batch {args.rollout_batch}, "
        f"{args.ppo_epochs} PPO epochs; images as {args.vision_inputs}"
    )
    print(
        f"query+response shape of the generated batches: TRL {trl_info.get('query_response_shape')}, "
        f"ours {info.get('query_response_shape')}"
    )
    print(f"mean of {mine['timed_iterations']} timed iteration(s) after 1 warm-up, each trainer in its own process:")
    for line in table(trl["mean"], mine["mean"], args.ppo_epochs):
        print(line)
    deviation = info.get("first_minibatch_ratio_deviation")
    if deviation:
        print(
            f"ours: first-minibatch |ratio - 1| per update (the ratio guard's reading): "
            f"{', '.join(f'{d:.3g}' for d in deviation)}"
        )
    print(
        f"ours / TRL per iteration: {ratio:.2f}x (target <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'}); "
        f"against TRL without its empty_cache + gc.collect: {ratio_without:.2f}x"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2, default=str)


if __name__ == "__main__":
    main()
