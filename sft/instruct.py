"""`vlm-rlhf instruct`: LLaVA-style instruction tuning on TRL's `SFTTrainer` (also
`accelerate launch -m sft.instruct --config configs/<setup>/instruct.yaml`).

LLaVA-1.5's second stage: vision tower frozen, projector + LM trained on multi-turn conversations, loss on the
answers only. One row per conversation, rendered by the processor's Vicuna-v1 chat template (added to a start
checkpoint that has none, and saved with the result); `ConversationCollator` masks all but the answers, since TRL
1.12 refuses `assistant_only_loss` for image data (trl#3751). TRL's default chunked loss (which calls the backbone,
where the image is fused) and the trainer's checkpointing are used as they are.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from trl import SFTTrainer

from sft.instruct_collator import ConversationCollator
from sft.instruct_config import InstructConfig
from sft.instruct_data import instruct_rows, with_conversation_images
from sft.trainer_setup import load_start, sft_trainer
from vlm.config_parsing import parse_config, record_config
from vlm.data.errors import DataError
from vlm.io import atomic_write_json
from vlm.model.chat_template import ensure_chat_template
from vlm.training.adaptation import trainable_parameters
from vlm.training.feature_bank import shared_feature_bank
from vlm.training.resume import SUMMARY, refuse_if_complete, run_facts, save_final, train_resumably

logger = logging.getLogger(__name__)
START_EVAL = "start_eval.json"


def _datasets(cfg: InstructConfig, model, processor):
    train, train_facts = instruct_rows(cfg.train_data, cfg.train_images, processor, cfg.max_length, cfg.train_limit)
    if not len(train):
        raise DataError(f"{cfg.train_data}: no conversation fits max_length {cfg.max_length}")
    evaluation, eval_facts = None, None
    if cfg.eval_data:
        evaluation, eval_facts = instruct_rows(
            cfg.eval_data, cfg.eval_images, processor, cfg.max_length, cfg.eval_limit
        )
    bank = None
    if cfg.cache_vision_features:
        paths = [p for rows in (train, evaluation) if rows is not None for p in rows["image_path"] if p]
        bank = shared_feature_bank(model, processor, paths, cfg.vision_feature_cache)
    train = with_conversation_images(train, bank)
    evaluation = with_conversation_images(evaluation, bank) if evaluation is not None else None
    return train, evaluation, {"train": train_facts, "eval": eval_facts}


def build_trainer(cfg: InstructConfig) -> tuple[SFTTrainer, dict]:
    if not cfg.init_from or not cfg.train_data:
        raise ValueError("instruct needs --init_from CHECKPOINT and --train_data LLAVA_INSTRUCT.json")
    model, processor = load_start(cfg)
    if ensure_chat_template(processor):
        logger.info("%s has no chat template: using LLaVA's Vicuna-v1 template", cfg.init_from)
    train, evaluation, facts = _datasets(cfg, model, processor)
    trainer = sft_trainer(cfg, model, processor, train, evaluation, data_collator=ConversationCollator(processor))
    trainable, total = trainable_parameters(trainer.model)
    logger.info(
        "training %.2fM of %.2fM parameters on %d answers in %d of %d conversations "
        "(%d answers past max_length dropped)",
        trainable / 1e6,
        total / 1e6,
        facts["train"]["answers"],
        facts["train"]["rows"],
        facts["train"]["conversations"],
        facts["train"]["dropped_turns"],
    )
    return trainer, facts


def train(cfg: InstructConfig, built: tuple[SFTTrainer, dict] | None = None) -> Path:
    """Train (resuming from the last checkpoint in `output_dir`), then save the model, its processor with the chat
    template and `summary.json`. `built`: a `build_trainer(cfg)` result to use (tests add callbacks to it)."""
    refuse_if_complete(cfg.output_dir, "instruct run")
    trainer, facts = built or build_trainer(cfg)
    record_config(cfg, out=cfg.output_dir)  # once the inputs are checked: a refused run writes nothing
    out = Path(cfg.output_dir)
    started = time.time()
    first_eval = _start_eval_loss(trainer, out)
    result, last = train_resumably(trainer, out)
    final_eval = trainer.evaluate()["eval_loss"] if trainer.eval_dataset is not None else None
    if save_final(trainer, out, merge_lora=cfg.lora is not None):
        summary = {
            "init_from": cfg.init_from,
            "data": {
                "train": {"file": cfg.train_data, **facts["train"]},
                "eval": {"file": cfg.eval_data, **(facts["eval"] or {})},
            },
            "epochs": round(trainer.state.epoch or 0.0, 3),
            "start_eval_loss": first_eval,
            "final_eval_loss": final_eval,
            "start_perplexity": _perplexity(first_eval),
            "final_perplexity": _perplexity(final_eval),
            "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 1),
            **run_facts(cfg, trainer, last, time.time() - started),
        }
        atomic_write_json(out / SUMMARY, summary, indent=2)
    trainer.accelerator.wait_for_everyone()
    return out


def _start_eval_loss(trainer: SFTTrainer, out: Path) -> float | None:
    """The held-out loss before training, measured once and kept beside the checkpoints, so a resumed run reports
    the same start."""
    if trainer.eval_dataset is None:
        return None
    path = out / START_EVAL
    if path.is_file():
        return json.loads(path.read_text())["eval_loss"]
    loss = trainer.evaluate()["eval_loss"]
    if trainer.is_world_process_zero():
        atomic_write_json(path, {"eval_loss": loss})
    return loss


def _perplexity(loss: float | None) -> float | None:
    return round(math.exp(loss), 3) if loss is not None else None


def main(argv=None) -> Path:
    (cfg,) = parse_config((InstructConfig,), argv, prog="vlm-rlhf instruct")
    return train(cfg)


if __name__ == "__main__":
    import sys

    from vlm.errors import run_entry

    sys.exit(run_entry("sft.instruct", main))
