"""What every training stage does around `trainer.train()`: resume from the last checkpoint of an interrupted run,
then save a plain model (LoRA merged) and its processor where later stages load it from."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers.trainer_utils import get_last_checkpoint

logger = logging.getLogger(__name__)


def train_resumably(trainer, output_dir: str | Path):
    """`trainer.train()`, from the newest `checkpoint-*` in `output_dir` if there is one. Returns (result, the
    checkpoint resumed from or None)."""
    out = Path(output_dir)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if last:
        logger.info("resuming from %s", last)
    return trainer.train(resume_from_checkpoint=last), last


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


def run_facts(cfg, trainer, resumed_from, seconds: float) -> dict:
    """The part of a stage's `summary.json` that every training run has: steps, first and last logged loss,
    time, resumption, trainable parameters, LoRA, cached features, world size."""
    from vlm.adaptation import trainable_parameters

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
        "cache_vision_features": cfg.cache_vision_features,
        "world_size": trainer.accelerator.num_processes,
    }
