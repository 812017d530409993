"""`vlm-rlhf ppo --config configs/<setup>/ppo.yaml` (also `accelerate launch -m ppo --config ...`).

Loads the SFT policy, the reward model (also the value model's start) and the prompts, checks that they fit
together, builds the image store, runs `VLMPPOTrainer`, and writes the final policy (LoRA folded in), its
processor, `best/` (the best held-out checkpoint) and `summary.json` into `output_dir`. `--resume` continues an
interrupted run from its newest `checkpoint-*`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from accelerate.utils import gather_object
from transformers import set_seed

from ppo.config import VLMPPOConfig
from ppo.data import feature_store, pixel_store, prompt_dataset
from ppo.held_out_eval import HeldOutEvaluation
from ppo.monitor import PLOT, plot_reward_and_truth
from ppo.reward_check import check_reward_model
from ppo.trainer import VLMPPOTrainer
from vlm.config_parsing import parse_config, record_config
from vlm.data.vqa import load_vqa
from vlm.io import atomic_write_json
from vlm.model.builder import check_checkpoint, load_vlm
from vlm.model.modeling_vlm import VLMForSequenceClassification
from vlm.model.reward_scoring import load_scorer
from vlm.training.adaptation import language_model_lora, trainable_parameters
from vlm.training.feature_bank import vision_fingerprint
from vlm.training.guards import TrainingStopped
from vlm.training.resume import SUMMARY, refuse_to_overwrite, weights_checksum

logger = logging.getLogger(__name__)


def _check_shared_tower(models: dict, processor, cfg: VLMPPOConfig) -> None:
    if cfg.vision_inputs != "features":
        return
    prints = {name: vision_fingerprint(m, processor) for name, m in models.items() if m is not None}
    if len(set(prints.values())) > 1:
        raise ValueError(
            f"the models' vision towers differ ({', '.join(prints)}), so one feature bank cannot serve them; "
            "use vision_inputs: pixels"
        )


def build_trainer(cfg: VLMPPOConfig, reward_fn=None, trainer_class=VLMPPOTrainer, callbacks=None) -> VLMPPOTrainer:
    if not cfg.sft_model_path or not cfg.data_dir:
        raise ValueError("ppo needs --sft_model_path POLICY_CHECKPOINT and --data_dir VQA_FOLDER")
    if cfg.reward_model_path is None and reward_fn is None and cfg.ground_truth_weight == 0:
        raise ValueError("ppo needs --reward_model_path (or a ground_truth_weight > 0 to reward VQA accuracy alone)")
    check_checkpoint(cfg.sft_model_path, "policy", "--sft_model_path")  # all checked before anything is loaded
    if cfg.reward_model_path:
        check_checkpoint(cfg.reward_model_path, "reward model", "--reward_model_path")
    if cfg.value_model_path:
        check_checkpoint(cfg.value_model_path)  # a policy or a reward model: PPO trains its score head
    if cfg.reference_model_path:
        check_checkpoint(cfg.reference_model_path, "policy", "--reference_model_path")
    set_seed(cfg.seed)
    policy, processor = load_vlm(cfg.sft_model_path)
    reward_model = None
    if cfg.reward_model_path:
        reward_model, _ = load_scorer(cfg.reward_model_path, processor)
        reward_model.requires_grad_(False).eval()
    value_path = cfg.value_model_path or cfg.reward_model_path or cfg.sft_model_path
    # any VLM checkpoint may start the value model: PPO trains its score head
    value_model, _ = load_scorer(value_path, processor, "value model", VLMForSequenceClassification)
    ref_model = None
    if cfg.reference_model_path:
        ref_model, _ = load_vlm(cfg.reference_model_path)
        ref_model.requires_grad_(False).eval()
    if reward_fn is None and reward_model is None:  # VQA accuracy alone (ground_truth_weight), no learned reward

        def reward_fn(rows, answers):
            return torch.zeros(len(answers))

    _check_shared_tower(
        {"policy": policy, "reward model": reward_model, "value model": value_model, "reference": ref_model},
        processor,
        cfg,
    )

    vqa = load_vqa(cfg.data_dir, cfg.train_split, cfg.image_dir, cfg.train_limit)
    if cfg.ground_truth_weight and "answers" not in vqa.column_names:
        raise ValueError(f"ground_truth_weight needs annotated prompts; {cfg.data_dir} has none for {cfg.train_split}")
    eval_vqa = None
    if cfg.eval_split:
        eval_vqa = load_vqa(cfg.data_dir, cfg.eval_split, None, cfg.eval_limit, require_annotations=True)
    paths = list(vqa["image_path"]) + (list(eval_vqa["image_path"]) if eval_vqa is not None else [])
    if cfg.vision_inputs == "features":  # the main process computes the cache, the others read it
        store = feature_store(policy, processor, paths, cfg.vision_feature_cache)
    else:
        store = pixel_store(processor, paths)
    prompts = prompt_dataset(vqa, processor, store)
    evaluator = None
    if eval_vqa is not None and cfg.eval_strategy != "no":
        evaluator = HeldOutEvaluation(eval_vqa, store, cfg.response_length, cfg.per_device_eval_batch_size)
    peft_config = language_model_lora(cfg.lora, policy.config) if cfg.lora else None
    trainer = trainer_class(
        cfg,
        processor,
        policy,
        value_model,
        prompts,
        vqa,
        store,
        reward_model=reward_model,
        ref_model=ref_model,
        reward_fn=reward_fn,
        evaluator=evaluator,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.reward_check = check_reward_model(trainer, processor)
    trainable, total = trainable_parameters(trainer.model)
    logger.info(
        "PPO: %d prompts, %d updates of %d rollouts on %d process(es); training %.2fM of %.2fM parameters",
        len(prompts),
        cfg.num_total_batches,
        cfg.batch_size,
        trainer.accelerator.num_processes,
        trainable / 1e6,
        total / 1e6,
    )
    return trainer


def run(trainer: VLMPPOTrainer) -> Path:
    cfg, acc = trainer.args, trainer.accelerator
    out = Path(cfg.output_dir)
    started = time.time()
    try:
        trainer.train()
    except TrainingStopped as e:
        found = trainer.checkpoint_dirs()
        last = f"the last good checkpoint is {found[-1]} (--resume continues from it)" if found else "no checkpoint yet"
        raise TrainingStopped(f"ppo stopped at update {trainer.state.global_step}: {e}; {last}") from None
    checksums = gather_object([weights_checksum(trainer.policy())])
    trainer.save_policy(out, replace=False)  # beside checkpoints and best/; summary.json marks it complete
    if acc.is_main_process:
        title = f"PPO {out.name}: the reward model's score and the truth, per update"
        plot_reward_and_truth(trainer.state.log_history, out / PLOT, title)
        atomic_write_json(out / SUMMARY, _summary(trainer, checksums, time.time() - started), indent=2)
    acc.wait_for_everyone()
    return out


def _summary(trainer: VLMPPOTrainer, checksums: list[str], seconds: float) -> dict:
    cfg = trainer.args
    logs = [h for h in trainer.state.log_history if "objective/scores" in h]
    evals = [h for h in trainer.state.log_history if "eval/vqa_accuracy" in h]
    start = getattr(trainer, "start_metrics", None) or (
        {k[5:]: v for k, v in evals[0].items() if k.startswith("eval/")} if evals else None
    )
    final = {k[5:]: v for k, v in evals[-1].items() if k.startswith("eval/")} if evals else None
    trainable, total = trainable_parameters(trainer.model)
    keys = (
        "objective/scores",
        "objective/reward_model_score",
        "objective/kl",
        "objective/rlhf_reward",
        "objective/vqa_accuracy",
        "val/ratio",
    )
    return {
        "sft_model_path": cfg.sft_model_path,
        "reward_model_path": cfg.reward_model_path,
        "value_model_path": cfg.value_model_path or cfg.reward_model_path or cfg.sft_model_path,
        "reference": cfg.reference_model_path or ("policy without its adapter" if cfg.lora else "frozen policy copy"),
        "data": {
            "dir": cfg.data_dir,
            "split": cfg.train_split,
            "prompts": trainer.train_dataset_len,
            "eval_split": cfg.eval_split,
        },
        "updates": trainer.state.global_step,
        "episodes": trainer.state.episode,
        "batch_size": cfg.batch_size,
        "ground_truth_weight": cfg.ground_truth_weight,
        "reward_check": getattr(trainer, "reward_check", None),
        "first_update": {k: logs[0].get(k) for k in keys} if logs else None,
        "last_update": {k: logs[-1].get(k) for k in keys} if logs else None,
        "held_out": {"start": start, "final": final},
        "reward_vs_truth": PLOT if (Path(cfg.output_dir) / PLOT).is_file() else None,
        "best": {**trainer.best, "path": str(Path(cfg.output_dir) / "best")} if trainer.best else None,
        "best_metric": cfg.best_metric,
        "kl_budget": cfg.kl_budget,
        "within_kl_budget": None if cfg.kl_budget is None or not final else final["kl"] <= cfg.kl_budget,
        "resumed_from": trainer.resumed_from,
        "world_size": trainer.accelerator.num_processes,
        "policy_checksum_by_rank": checksums,
        "trainable_parameters": trainable,
        "parameters": total,
        "lora": cfg.lora,
        "vision_inputs": cfg.vision_inputs,
        "seconds": round(seconds, 1),
    }


def train(cfg: VLMPPOConfig) -> Path:
    refuse_to_overwrite(cfg.output_dir, "PPO run", cfg.resume)
    trainer = build_trainer(cfg)
    record_config(cfg, out=cfg.output_dir)  # once the inputs are checked: a refused run writes nothing
    return run(trainer)


def main(argv=None) -> Path:
    (cfg,) = parse_config((VLMPPOConfig,), argv, prog="vlm-rlhf ppo")
    return train(cfg)
