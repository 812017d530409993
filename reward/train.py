"""`vlm-rlhf reward train --config configs/<setup>/reward.yaml` (also `accelerate launch -m reward train ...`).

A reward model starts from the SFT checkpoint and learns P(correct | image, question, answer) from the label store:
`readout: likelihood` (default) reads it from the LM's log-likelihood of the answer (`VLMForAnswerLikelihood`, its
scale and shift fitted to the training labels first), `readout: eos` from a new scalar head on the EOS state
(`VLMForSequenceClassification`). Labels are split by image; after training the
held-out answers are scored and `summary.json` (label counts, class balance, held-out accuracy at 0.5, ROC-AUC,
ECE, the score gap, agreement with the true correctness where simulated rows know it, pair accuracy) and
`reliability.png` are written next to the model. An interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoProcessor, set_seed

from reward.config import RewardConfig
from reward.data import answer_pairs, check_trainable, labelled_answers
from reward.likelihood_head import fit_likelihood_head
from reward.metrics import binary_metrics, reliability_diagram
from reward.trainer import RewardCollator, RewardModelTrainer
from vlm.config_parsing import parse_config, record_config
from vlm.io import atomic_write_json
from vlm.model.builder import check_checkpoint
from vlm.model.modeling_vlm import VLMForAnswerLikelihood, VLMForSequenceClassification
from vlm.model.reward_scoring import score_answers
from vlm.training.adaptation import apply_freeze_overrides, language_model_lora, trainable_parameters
from vlm.training.feature_bank import image_inputs, shared_feature_bank
from vlm.training.resume import SUMMARY, refuse_if_complete, run_facts, save_final, train_resumably

logger = logging.getLogger(__name__)
RELIABILITY = "reliability.png"
READOUT_CLASSES = {"likelihood": VLMForAnswerLikelihood, "eos": VLMForSequenceClassification}
HEADS = {"likelihood": "likelihood_head", "eos": "score"}  # trained in full (and saved) beside LoRA


def _datasets(cfg: RewardConfig, rows: list[dict]):
    train_rows = [r for r in rows if r["side"] == "train"]
    if cfg.objective == "pairwise":
        train_rows = answer_pairs(train_rows, cfg.seed)
        if not train_rows:
            raise ValueError(
                "pairwise: no image and question in the training labels has both a correct and an "
                "incorrect answer; sample more answers per question or use objective: pointwise"
            )
    return Dataset.from_list(train_rows)


def build_trainer(cfg: RewardConfig) -> tuple[RewardModelTrainer, list[dict], dict]:
    if not cfg.init_from or not cfg.label_store:
        raise ValueError("reward train needs --init_from SFT_CHECKPOINT and --label_store LABELS_FOLDER")
    check_checkpoint(cfg.init_from)  # a policy (the usual start) or a reward model: its backbone is what is used
    set_seed(cfg.seed)
    rows = check_trainable(labelled_answers(cfg.label_store, cfg), cfg, cfg.label_store)
    model = READOUT_CLASSES[cfg.readout].from_pretrained(cfg.init_from)
    processor = AutoProcessor.from_pretrained(cfg.init_from)
    apply_freeze_overrides(model, cfg.freeze_vision, cfg.freeze_projector, cfg.freeze_language_model)
    bank = None
    if cfg.cache_vision_features:
        bank = shared_feature_bank(model, processor, sorted({r["image"] for r in rows}), cfg.vision_feature_cache)
    train = _datasets(cfg, rows)
    train_rows = [r for r in rows if r["side"] == "train"]
    positives = sum(r["label"] for r in train_rows)
    negatives = len(train_rows) - positives
    pos_weight = negatives / positives if cfg.class_balance == "weight" and cfg.objective == "pointwise" else None
    balance = {"train_correct": positives, "train_incorrect": negatives, "pos_weight": pos_weight}
    if cfg.readout == "likelihood":  # (a resumed run then loads its checkpoint's head over this fit)
        model.to(cfg.device)
        balance["likelihood_head"] = fit_likelihood_head(
            model, processor, train_rows, bank, pos_weight, cfg.per_device_eval_batch_size
        )
        logger.info("reward model: likelihood head fitted to the training labels: %s", balance["likelihood_head"])
    task_type = "SEQ_CLS" if cfg.readout == "eos" else None
    peft_config = language_model_lora(cfg.lora, model.config, task_type=task_type) if cfg.lora else None
    if peft_config is not None:
        from peft import get_peft_model

        peft_config.modules_to_save = (peft_config.modules_to_save or []) + [HEADS[cfg.readout]]
        model = get_peft_model(model, peft_config)
    trainer = RewardModelTrainer(
        model=model,
        args=cfg,
        train_dataset=train,
        data_collator=RewardCollator(processor, cfg.objective, bank),
        processing_class=processor,
        objective=cfg.objective,
        pos_weight=pos_weight,
    )
    trainable, total = trainable_parameters(trainer.model)
    logger.info(
        "reward model: training %.2fM of %.2fM parameters on %d %s examples (%d correct / %d incorrect answers)",
        trainable / 1e6,
        total / 1e6,
        len(train),
        cfg.objective,
        positives,
        negatives,
    )
    return trainer, rows, balance


def evaluate_held_out(model, processor, rows: list[dict], cfg: RewardConfig, bank=None) -> tuple[dict, np.ndarray]:
    """Score the held-out answers (images never trained on) and measure them against their labels, against the
    true correctness where known, and as pairs. With a feature bank the tower is not run again."""
    held_out = [r for r in rows if r["side"] == "eval"]
    images = image_inputs([r["image"] for r in held_out], (f"answer {r['answer_id']}" for r in held_out), bank)
    model.eval()
    logits = score_answers(
        model,
        processor,
        images,
        [r["question"] for r in held_out],
        [r["answer"] for r in held_out],
        batch_size=cfg.per_device_eval_batch_size,
    ).numpy()
    labels = np.array([r["label"] for r in held_out])
    metrics = {"labels": binary_metrics(logits, labels)}
    known = np.array([r["truth"] >= 0 for r in held_out])
    if known.any():
        truth = np.array([r["truth"] for r in held_out])[known]
        metrics["truth"] = binary_metrics(logits[known], truth)
    by_text = {(r["image"], r["question"], r["answer"]): i for i, r in enumerate(held_out)}
    pairs = answer_pairs(held_out, cfg.seed)
    if pairs:
        wins = [
            logits[by_text[(p["image"], p["question"], p["chosen"])]]
            > logits[by_text[(p["image"], p["question"], p["rejected"])]]
            for p in pairs
        ]
        metrics["pairs"] = {"pairs": len(pairs), "accuracy": float(np.mean(wins))}
    return metrics, logits


def train(cfg: RewardConfig) -> Path:
    refuse_if_complete(cfg.output_dir, "reward model")
    started = time.time()
    trainer, rows, balance = build_trainer(cfg)
    record_config(cfg, out=cfg.output_dir)  # once the inputs are checked: a refused run writes nothing
    out = Path(cfg.output_dir)
    result, last = train_resumably(trainer, out)
    if save_final(trainer, out, merge_lora=bool(cfg.lora)):
        model = trainer.accelerator.unwrap_model(trainer.model)
        if cfg.lora:
            model = READOUT_CLASSES[cfg.readout].from_pretrained(out)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        bank = trainer.data_collator.bank  # the training run's cached features, when it had them
        metrics, logits = evaluate_held_out(model.to(device), trainer.processing_class, rows, cfg, bank)
        trainer.log({f"held_out/{k}": v for k, v in metrics["labels"].items() if isinstance(v, float)})
        held_out = [r for r in rows if r["side"] == "eval"]
        reliability_diagram(
            logits,
            np.array([r["label"] for r in held_out]),
            out / RELIABILITY,
            f"reward model, {len(held_out)} held-out answers (ECE {metrics['labels']['ece']:.3f})",
        )
        atomic_write_json(
            out / SUMMARY, _summary(cfg, trainer, rows, balance, metrics, result, last, time.time() - started), indent=2
        )
    trainer.accelerator.wait_for_everyone()
    return out


def _summary(cfg, trainer, rows, balance, metrics, result, resumed_from, seconds) -> dict:
    return {
        "init_from": cfg.init_from,
        "label_store": cfg.label_store,
        "readout": cfg.readout,
        "objective": cfg.objective,
        "weighting": cfg.weighting,
        "labels": {
            "answers": sum(not r["correction"] for r in rows),
            "train_answers": sum(r["side"] == "train" and not r["correction"] for r in rows),
            "train_corrections": sum(r["correction"] for r in rows),
            "held_out_answers": sum(r["side"] == "eval" for r in rows),
            "train_images": len({r["image"] for r in rows if r["side"] == "train"}),
            "held_out_images": len({r["image"] for r in rows if r["side"] == "eval"}),
            "train_examples": len(trainer.train_dataset),
            "gold_answers": sum(r.get("gold", False) for r in rows),
            "min_gold_accuracy": cfg.min_gold_accuracy,
            "gold_filter": cfg.gold_filter if cfg.min_gold_accuracy is not None else None,
            **balance,
        },
        "held_out": metrics,
        "train_runtime_s": round(result.metrics.get("train_runtime", seconds), 1),
        **run_facts(cfg, trainer, resumed_from, seconds),
        "reliability_diagram": RELIABILITY,
    }


def main(argv=None) -> Path:
    (cfg,) = parse_config((RewardConfig,), argv, prog="vlm-rlhf reward train")
    return train(cfg)
