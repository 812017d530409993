"""What both SFT-style stages (answer-only VQA SFT and instruction tuning) do around TRL's `SFTTrainer`: load the
start checkpoint with the configured freezing, share the frozen tower's feature cache across ranks, and build the
trainer with the optional LoRA on the language model."""

from __future__ import annotations

from pathlib import Path

from transformers import set_seed
from trl import SFTTrainer

from vlm.adaptation import apply_freeze_overrides, language_model_lora
from vlm.builder import load_vlm
from vlm.feature_bank import FeatureBank, build_feature_bank


def load_start(cfg):
    """(model, processor) of `cfg.init_from`, seeded, with the config's freeze flags applied."""
    set_seed(cfg.seed)
    model, processor = load_vlm(cfg.init_from)
    apply_freeze_overrides(model, cfg.freeze_vision, cfg.freeze_projector, cfg.freeze_language_model)
    return model, processor


def shared_feature_bank(cfg, model, processor, image_paths) -> FeatureBank:
    with cfg.main_process_first(desc="vision feature cache"):  # rank 0 computes, the others then read it
        return build_feature_bank(model, processor, image_paths, Path(cfg.vision_feature_cache).expanduser())


def sft_trainer(cfg, model, processor, train, evaluation) -> SFTTrainer:
    peft_config = language_model_lora(cfg.lora, model.config) if cfg.lora is not None else None
    return SFTTrainer(
        model=model,
        args=cfg,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=processor,
        peft_config=peft_config,
    )
