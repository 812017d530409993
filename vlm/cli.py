"""`vlm-rlhf <command> [--config FILE.yaml] [--key value ...]`: one entry point that dispatches to each command.

This and `vlm.pipeline` are the only code that knows every stage; each stage keeps its own `main(argv)`.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

# command -> (module, function, one-line help). Modules are imported on use, so `--help` stays fast.
COMMANDS = {
    "pipeline": ("vlm.pipeline", "main", "run every stage on the configured setup (the demo: `make demo`)"),
    "init-model": ("vlm.commands.init_model", "main", "build a fresh VLM (tiny preset, or CLIP + GPT-2 checkpoints)"),
    "sft": ("sft.train", "main", "stage 1: answer-only VQA SFT on TRL's SFTTrainer"),
    "eval": ("vlm.commands.evaluate", "main", "VQA accuracy of one or more checkpoints, side by side"),
    "data": (
        "vlm.commands.data",
        "main",
        "`data synth`: synthetic VQA v2 + LLaVA data; `data instruct-mix`: its instruction mix; `data check`",
    ),
    "label": (
        "labeling.cli",
        "main",
        "stage 2: `label generate|push|pull|simulate|stats|serve` (answers -> Label Studio -> label store)",
    ),
    "labels": ("labeling.cli", "main", "same as `label` (`vlm-rlhf labels stats --store DIR`)"),
    "reward": (
        "reward.cli",
        "main",
        "stage 3: `reward train` (reward model from the label store), `reward score` (P(correct) per answer)",
    ),
    "ppo": ("ppo.train", "main", "stage 4: image-conditioned PPO against the reward model (TRL + accelerate)"),
    "instruct": ("sft.instruct", "main", "stage 5: LLaVA-style instruction tuning on conversations (TRL SFTTrainer)"),
}

USAGE = "usage: vlm-rlhf <command> [options]\n\ncommands:\n" + "\n".join(
    f"  {name:<12} {help_}" for name, (_, _, help_) in COMMANDS.items()
)


def _report(command: str, result) -> None:
    if command == "pipeline":
        from vlm.pipeline import format_summary

        print(format_summary(result))
    elif command == "eval":
        from vlm.commands.evaluate import format_results

        print(format_results(result))
    elif result is not None:
        print(result)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"vlm-rlhf: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    logging.basicConfig(level=os.environ.get("VLM_RLHF_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    module, function, _ = COMMANDS[command]
    from vlm.data.errors import DataError, ServiceError

    stopped = ()
    if command == "ppo":
        from ppo.guards import TrainingStopped

        stopped = (TrainingStopped,)
    try:
        result = getattr(importlib.import_module(module), function)(rest)
    except (DataError, ValueError, FileNotFoundError, FileExistsError, ServiceError, *stopped) as e:
        print(f"vlm-rlhf {command}: error: {e}", file=sys.stderr)
        return 2
    _report(command, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
