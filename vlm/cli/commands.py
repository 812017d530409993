"""The command table: each `vlm-rlhf` command's module, imported only when the command runs (so `--help` stays
fast and the core never imports a stage at import time). The CLI and `pipeline` both start stages through it."""

from __future__ import annotations

import importlib

# command -> (module, function, one-line help)
COMMANDS = {
    "pipeline": ("vlm.cli.pipeline", "main", "run every stage on the configured setup (the demo: `make demo`)"),
    "init-model": ("vlm.cli.init_model", "main", "build a fresh VLM (tiny preset, or CLIP + GPT-2 checkpoints)"),
    "pretrain-base": (
        "vlm.cli.pretrain_base",
        "main",
        "build the tiny preset's pre-trained vision tower (the demo's stand-in for CLIP) and its card",
    ),
    "sft": ("sft.train", "main", "stage 1: answer-only VQA SFT on TRL's SFTTrainer"),
    "eval": ("vlm.cli.evaluate", "main", "VQA accuracy of one or more checkpoints, side by side"),
    "probe": (
        "vlm.cli.probe",
        "main",
        "linear probes: what a checkpoint's tower and projector carry of each object's colour, shape and place",
    ),
    "data": (
        "vlm.cli.data",
        "main",
        "`data synth`: synthetic VQA v2 + LLaVA data; `data instruct-mix`: its instruction mix; `data check`",
    ),
    "label": (
        "labeling.cli",
        "main",
        "stage 2: `label round` (one labeling round), `label generate|push|pull|simulate|stats|serve`",
    ),
    "labels": ("labeling.cli", "main", "same as `label` (`vlm-rlhf labels stats --store DIR`)"),
    "reward": (
        "reward.cli",
        "main",
        "stage 3: `reward train` (reward model from the label store), `reward score` (P(correct) per answer)",
    ),
    "ppo": ("ppo.train", "main", "stage 4: image-conditioned PPO against the reward model (TRL + accelerate)"),
    "grpo": (
        "grpo.train",
        "main",
        "stage 4 without a critic: TRL's GRPO against the same image reward model (PPO's alternative)",
    ),
    "instruct": ("sft.instruct", "main", "stage 5: LLaVA-style instruction tuning on conversations (TRL SFTTrainer)"),
}


def run_command(command: str, argv: list[str]):
    """Run one command by name, as `vlm-rlhf <command> <argv...>` would, and return its result."""
    module, function, _ = COMMANDS[command]
    return getattr(importlib.import_module(module), function)(list(argv))
