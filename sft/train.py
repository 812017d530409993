"""`vlm-rlhf sft`: answer-only VQA SFT on TRL's `SFTTrainer` (also `accelerate launch -m sft --config ...`).

TRL's trainer works with our model and processor as they are: prompt-completion rows with `images`, its vision
collator (left-padded prompts, right-padded completions, labels -100 outside the completion) and its default
chunked loss, which calls the backbone and so sees the image. This module only prepares rows, freezing, LoRA and
the optional feature cache, resumes after an interruption, and writes the final model and `summary.json`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from trl import SFTTrainer

from sft.config import VQASFTConfig
from sft.data import AttachImages, vqa_sft_rows, with_images
from sft.trainer_setup import load_start, sft_trainer
from sft.vqa_curve import VQACurve, VQASFTTrainer, vqa_curve_points
from vlm.config_parsing import parse_config, record_config
from vlm.data.vqa import load_vqa
from vlm.io import atomic_write_json
from vlm.training.adaptation import trainable_parameters
from vlm.training.feature_bank import shared_feature_bank
from vlm.training.resume import SUMMARY, refuse_if_complete, run_facts, save_final, train_resumably

logger = logging.getLogger(__name__)


def _datasets(cfg: VQASFTConfig, model, processor):
    eos = processor.tokenizer.eos_token
    train_vqa = load_vqa(cfg.data_dir, cfg.train_split, cfg.image_dir, cfg.train_limit, require_annotations=True)
    eval_vqa = None
    if cfg.eval_split:
        eval_vqa = load_vqa(cfg.data_dir, cfg.eval_split, None, cfg.eval_limit, require_annotations=True)
    bank = None
    if cfg.cache_vision_features:
        paths = list(train_vqa["image_path"]) + (list(eval_vqa["image_path"]) if eval_vqa is not None else [])
        bank = shared_feature_bank(model, processor, paths, cfg.vision_feature_cache)
    attach = AttachImages(eos, bank, sample_answers=cfg.answer == "sample", seed=cfg.seed)
    train = with_images(vqa_sft_rows(train_vqa, eos), attach)
    evaluation = with_images(vqa_sft_rows(eval_vqa, eos), attach) if eval_vqa is not None else None
    curve = None
    if eval_vqa is not None and cfg.eval_vqa_accuracy:
        curve = VQACurve(eval_vqa, bank, cfg.eval_max_new_tokens, cfg.per_device_eval_batch_size)
    return train, evaluation, curve


def build_trainer(cfg: VQASFTConfig) -> VQASFTTrainer:
    if not cfg.init_from or not cfg.data_dir:
        raise ValueError("sft needs --init_from CHECKPOINT and --data_dir VQA_FOLDER")
    model, processor = load_start(cfg)
    train, evaluation, curve = _datasets(cfg, model, processor)
    trainer = sft_trainer(cfg, model, processor, train, evaluation, vqa_curve=curve)
    trainable, total = trainable_parameters(trainer.model)
    logger.info("training %.2fM of %.2fM parameters on %d questions", trainable / 1e6, total / 1e6, len(train))
    return trainer


def train(cfg: VQASFTConfig) -> Path:
    refuse_if_complete(cfg.output_dir, "SFT run")
    trainer = build_trainer(cfg)
    record_config(cfg, out=cfg.output_dir)  # once the inputs are checked: a refused run writes nothing
    return run_training(trainer, cfg)


def run_training(trainer: SFTTrainer, cfg: VQASFTConfig) -> Path:
    """Train (from the last checkpoint in `output_dir` if an earlier run was interrupted), then save the final
    model, its processor and `summary.json` into `output_dir`."""
    out = Path(cfg.output_dir)
    started = time.time()
    result, last = train_resumably(trainer, out)
    if save_final(trainer, out, merge_lora=cfg.lora is not None):
        atomic_write_json(out / SUMMARY, _summary(cfg, trainer, result, last, time.time() - started), indent=2)
    trainer.accelerator.wait_for_everyone()
    return out


def _summary(cfg: VQASFTConfig, trainer: SFTTrainer, result, resumed_from, seconds: float) -> dict:
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    runtime = result.metrics.get("train_runtime", seconds)
    tokens = trainer._total_train_tokens  # counted by SFTTrainer per batch (attended tokens, image tokens included)
    return {
        "init_from": cfg.init_from,
        "data": {
            "dir": cfg.data_dir,
            "train_split": cfg.train_split,
            "train_questions": len(trainer.train_dataset),
            "eval_split": cfg.eval_split,
            "eval_questions": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
            "answer": cfg.answer,
        },
        "epochs": round(trainer.state.epoch or 0.0, 3),
        "final_eval_loss": evals[-1] if evals else None,
        "vqa_curve": vqa_curve_points(trainer.state.log_history),
        "train_runtime_s": round(runtime, 1),
        "tokens": int(tokens),
        "tokens_per_second": round(tokens / runtime, 1) if runtime else None,
        **run_facts(cfg, trainer, resumed_from, seconds),
    }


def main(argv=None) -> Path:
    (cfg,) = parse_config((VQASFTConfig,), argv, prog="vlm-rlhf sft")
    return train(cfg)
