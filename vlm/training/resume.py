"""What every training stage does around `trainer.train()`: resume from the last complete checkpoint of an
interrupted run, then save a plain model (LoRA merged) and its processor where later stages load it from.

transformers' Trainer writes `checkpoint-<step>/` in place, file after file (`Trainer._save_checkpoint`: weights,
optimizer, scheduler, RNG state, `trainer_state.json` last), and picks the highest step to resume from whatever it
holds (`get_last_checkpoint`), so a run killed while saving could never resume. It staged saves in a
`tmp-checkpoint-<step>` folder in 4.36 (huggingface/transformers#27820) and dropped that again after renames broke
multi-GPU and multi-node saves (#27925, #28119); 5.24 has none. So the guarantee lives here, on the reading side,
which also covers folders from before this check: only complete checkpoints are resumed from, and an incomplete one
newer than them is renamed aside (`partial-checkpoint-<step>-<time>`, out of the Trainer's `checkpoint-*` rotation,
so nothing is deleted) with a warning. PPO, with its own loop, stages and renames instead (`ppo/checkpoints.py`).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
import shutil
import time
from pathlib import Path

from transformers.trainer import OPTIMIZER_NAME, OPTIMIZER_NAME_BIN, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import (
    ADAPTER_SAFE_WEIGHTS_NAME,
    ADAPTER_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
)

from vlm.data.errors import DataError
from vlm.io import atomic_write_json
from vlm.model.weight_files import check_weight_files

logger = logging.getLogger(__name__)
SUMMARY = "summary.json"  # written last by every training stage: its presence marks a finished run
PARTIAL = "partial-"  # prefix of an incomplete checkpoint set aside
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_WEIGHTS = (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, ADAPTER_SAFE_WEIGHTS_NAME, ADAPTER_WEIGHTS_NAME)


def is_complete(output_dir: str | Path) -> bool:
    """Whether `output_dir` holds a finished run of a stage (its `summary.json`), which is then not run again."""
    return (Path(output_dir) / SUMMARY).is_file()


def refuse_if_complete(output_dir: str | Path, run: str) -> None:
    """Stop before a stage would train again into, and overwrite, a finished `run` ("SFT run", "reward model")."""
    if is_complete(output_dir):
        raise FileExistsError(f"{output_dir} already holds a finished {run} ({SUMMARY}); choose another one")


def refuse_to_overwrite(output_dir: str | Path, run: str, resume: bool) -> None:
    """`refuse_if_complete`, and for a run started without `--resume` into a folder holding checkpoints of an
    earlier one, a clear error instead of mixing the two (the RL stages' rule)."""
    refuse_if_complete(output_dir, run)
    if not resume and list(Path(output_dir).glob("checkpoint-*")):
        raise FileExistsError(f"{output_dir} holds checkpoints of an earlier run: add --resume, or choose another")


def weights_checksum(model) -> str:
    """A short hash of every weight of `model`: equal on every rank of a run whose ranks stayed in step."""
    digest = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        digest.update(name.encode() + p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def checkpoint_gaps(folder: Path, save_only_model: bool = False) -> list[str]:
    """What the Trainer checkpoint `folder` lacks to be resumed from, by the names the Trainer writes (empty when it
    is complete). DeepSpeed keeps the optimizer and scheduler (and under ZeRO-3 the weights) in `global_step*/`, FSDP
    the weights and optimizer in `pytorch_model_fsdp*` / `optimizer*`; `save_only_model` runs write no states."""
    deepspeed = any(p.is_dir() for p in folder.glob("global_step*"))
    gaps = []
    if (folder / SAFE_WEIGHTS_NAME).is_file() or (folder / SAFE_WEIGHTS_INDEX_NAME).is_file():
        try:
            check_weight_files(folder)
        except DataError:
            gaps.append(f"whole {SAFE_WEIGHTS_NAME}")
    elif not (any((folder / n).is_file() for n in _WEIGHTS) or deepspeed or any(folder.glob("pytorch_model_fsdp*"))):
        gaps.append(SAFE_WEIGHTS_NAME)
    if not save_only_model:
        optimizer = (folder / OPTIMIZER_NAME).is_file() or (folder / OPTIMIZER_NAME_BIN).is_file()
        if not (optimizer or deepspeed or any(p.is_dir() for p in folder.glob("optimizer*"))):
            gaps.append(OPTIMIZER_NAME)
        if not ((folder / SCHEDULER_NAME).is_file() or deepspeed):
            gaps.append(SCHEDULER_NAME)
        if not any(folder.glob("rng_state*.pth")):
            gaps.append("rng_state.pth")
    if not (folder / TRAINER_STATE_NAME).is_file():
        gaps.append(TRAINER_STATE_NAME)
    return gaps


def last_complete_checkpoint(output_dir: str | Path, save_only_model: bool = False):
    """The newest complete `checkpoint-<step>` in `output_dir` (None when there is none), and the incomplete ones
    newer than it, each with what it lacks (`checkpoint_gaps`)."""
    found = [(int(m[1]), p) for p in Path(output_dir).iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    incomplete = {}
    for _, folder in sorted(found, reverse=True):
        gaps = checkpoint_gaps(folder, save_only_model)
        if not gaps:
            return folder, incomplete
        incomplete[folder] = gaps
    return None, incomplete


def set_aside(folder: Path) -> Path:
    """Rename `folder` to `partial-<name>-<time>` beside it (never deleted: it may be all that is left of a run)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = folder.with_name(f"{PARTIAL}{folder.name}-{stamp}"), 1
    while target.exists():
        target, n = folder.with_name(f"{PARTIAL}{folder.name}-{stamp}-{n}"), n + 1
    folder.rename(target)
    return target


def train_resumably(trainer, output_dir: str | Path):
    """`trainer.train()`, from the newest complete `checkpoint-*` in `output_dir` if there is one; incomplete ones
    newer than it (a run killed while saving) are set aside first, with a warning. Returns (result, the checkpoint
    resumed from or None)."""
    out = Path(output_dir)
    last, incomplete = last_complete_checkpoint(out, trainer.args.save_only_model) if out.is_dir() else (None, {})
    trainer.accelerator.wait_for_everyone()  # every process has chosen `last` before a folder moves
    if trainer.args.should_save:
        for folder, gaps in incomplete.items():
            aside = set_aside(folder)
            logger.warning(
                "%s is incomplete (no %s): a run stopped while writing it; set aside as %s, resuming from %s",
                folder,
                ", ".join(gaps),
                aside.name,
                last.name if last else "the start",
            )
    trainer.accelerator.wait_for_everyone()
    resumed = str(last) if last else None
    if resumed:
        logger.info("resuming from %s", resumed)
    return trainer.train(resume_from_checkpoint=resumed), resumed


def save_final(trainer, output_dir: str | Path, merge_lora: bool) -> bool:
    """Save the trained model (a LoRA adapter folded into the weights, so later stages load a plain VLM) and the
    processor into `output_dir`, on the main process only. Returns whether this process wrote them."""
    model = trainer.model.merge_and_unload() if merge_lora else trainer.model
    trainer.accelerator.wait_for_everyone()
    writer = trainer.is_world_process_zero()
    if writer:
        model.save_pretrained(output_dir)
        trainer.processing_class.save_pretrained(output_dir)
    return writer


def save_policy(accelerator, policy, processor, out: Path, replace: bool = True, records: dict | None = None) -> None:
    """The policy alone in HF format (a LoRA adapter folded in on a copy), with its processor and `records` (file
    name -> JSON). `replace`: written beside and renamed over `out`, so a reader never sees half of it. Called on
    every rank; rank 0 writes (the RL stages' `best/` and final policy)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if hasattr(policy, "peft_config"):
            policy = copy.deepcopy(policy).merge_and_unload()
        target = out.with_name(f".tmp-{out.name}") if replace else out
        if replace:
            shutil.rmtree(target, ignore_errors=True)
        policy.save_pretrained(target)
        processor.save_pretrained(target)
        for name, record in (records or {}).items():
            atomic_write_json(target / name, record, indent=2)
        if replace:
            shutil.rmtree(out, ignore_errors=True)
            target.rename(out)
    accelerator.wait_for_everyone()


def run_facts(cfg, trainer, resumed_from, seconds: float) -> dict:
    """The part of a stage's `summary.json` that every training run has: steps, first and last logged loss,
    time, resumption, trainable parameters, LoRA, cached features, world size."""
    from vlm.training.adaptation import trainable_parameters

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trainable, total = trainable_parameters(trainer.model)
    return {
        "steps": trainer.state.global_step,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "seconds": round(seconds, 1),
        "resumed_from": resumed_from,
        "trainable_parameters": trainable,
        "parameters": total,
        "lora": cfg.lora,
        "cache_vision_features": getattr(cfg, "cache_vision_features", None),  # RL stages: vision_inputs
        "world_size": trainer.accelerator.num_processes,
    }
