"""What both SFT-style stages (answer-only VQA SFT and instruction tuning) do around TRL's `SFTTrainer`: load the
start checkpoint with the configured freezing, and build the trainer with the optional LoRA on the language model."""

from __future__ import annotations

from transformers import set_seed

from sft.vqa_curve import VQACurve, VQASFTTrainer
from vlm.model.builder import check_checkpoint, load_vlm
from vlm.training.adaptation import apply_freeze_overrides, language_model_lora


def load_start(cfg):
    """(model, processor) of `cfg.init_from`, seeded, with the config's freeze flags applied."""
    check_checkpoint(cfg.init_from, "policy", "--init_from")
    set_seed(cfg.seed)
    model, processor = load_vlm(cfg.init_from)
    apply_freeze_overrides(model, cfg.freeze_vision, cfg.freeze_projector, cfg.freeze_language_model)
    return model, processor


def sft_trainer(
    cfg, model, processor, train, evaluation, vqa_curve: VQACurve | None = None, data_collator=None
) -> VQASFTTrainer:
    peft_config = language_model_lora(cfg.lora, model.config) if cfg.lora is not None else None
    return VQASFTTrainer(
        model=model,
        args=cfg,
        data_collator=data_collator,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=processor,
        peft_config=peft_config,
        vqa_curve=vqa_curve,
    )
