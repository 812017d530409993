"""`vlm-rlhf grpo --config configs/<setup>/grpo.yaml` (also `accelerate launch -m grpo --config ...`).

Loads the SFT policy, the reward model and the prompts, checks that they fit together, runs `VLMGRPOTrainer`
(TRL's `GRPOTrainer`), and writes the final policy (LoRA folded in), its processor, `best/` (the best held-out
evaluation) and `summary.json` into `output_dir`. An interrupted run continues from its last complete
`checkpoint-*` when started again with `--resume true`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from accelerate.utils import gather_object
from transformers import set_seed

from grpo.config import VLMGRPOConfig
from grpo.data import prompt_dataset
from grpo.rewards import RewardModelScore, vqa_accuracy_reward
from grpo.trainer import BEST, HeldOutVQA, VLMGRPOTrainer
from vlm.config_parsing import parse_config, record_config
from vlm.data.vqa import load_vqa
from vlm.io import atomic_write_json
from vlm.model.builder import check_checkpoint, load_vlm
from vlm.model.reward_scoring import load_scorer
from vlm.training.adaptation import language_model_lora
from vlm.training.feature_bank import image_inputs, shared_feature_bank
from vlm.training.guards import TrainingStopped
from vlm.training.resume import (
    SUMMARY,
    last_complete_checkpoint,
    refuse_to_overwrite,
    run_facts,
    save_final,
    train_resumably,
    weights_checksum,
)

logger = logging.getLogger(__name__)


def reward_functions(cfg: VLMGRPOConfig, reward_model, processor, annotated: bool) -> tuple[list, list[float]]:
    """TRL's `reward_funcs` and `reward_weights`: the reward model (weight 1) and, where the prompts' answers are
    known, their VQA accuracy (weight `ground_truth_weight`; 1 with no reward model: the oracle)."""
    funcs, weights = [], []
    if reward_model is not None:
        funcs.append(RewardModelScore(reward_model, processor, cfg.per_device_eval_batch_size))
        weights.append(1.0)
    if annotated:
        funcs.append(vqa_accuracy_reward)
        weights.append(cfg.ground_truth_weight if reward_model is not None else 1.0)
    return funcs, weights


def build_trainer(cfg: VLMGRPOConfig, reward_funcs=None, callbacks=None) -> VLMGRPOTrainer:
    if not cfg.sft_model_path or not cfg.data_dir:
        raise ValueError("grpo needs --sft_model_path POLICY_CHECKPOINT and --data_dir VQA_FOLDER")
    check_checkpoint(cfg.sft_model_path, "policy", "--sft_model_path")  # all checked before anything is loaded
    if cfg.reward_model_path:
        check_checkpoint(cfg.reward_model_path, "reward model", "--reward_model_path")
    set_seed(cfg.seed)
    policy, processor = load_vlm(cfg.sft_model_path)
    reward_model = None
    if cfg.reward_model_path:
        reward_model, _ = load_scorer(cfg.reward_model_path, processor)
        reward_model.requires_grad_(False).eval()

    vqa = load_vqa(cfg.data_dir, cfg.train_split, cfg.image_dir, cfg.train_limit)
    annotated = "answers" in vqa.column_names
    if reward_model is None and reward_funcs is None and not annotated:
        raise ValueError(
            f"grpo needs --reward_model_path: {cfg.data_dir} has no answers for {cfg.train_split} to reward instead"
        )
    eval_vqa = None
    if cfg.eval_split and cfg.eval_strategy != "no":
        eval_vqa = load_vqa(cfg.data_dir, cfg.eval_split, None, cfg.eval_limit, require_annotations=True)
    bank = None
    if cfg.vision_inputs == "features":  # the main process computes the cache, the others read it
        paths = list(vqa["image_path"]) + (list(eval_vqa["image_path"]) if eval_vqa is not None else [])
        bank = shared_feature_bank(policy, processor, paths, cfg.vision_feature_cache)
    if reward_funcs is None:
        reward_funcs, cfg.reward_weights = reward_functions(cfg, reward_model, processor, annotated)
    evaluation = None
    if eval_vqa is not None:
        evaluation = HeldOutVQA(
            eval_vqa,
            lambda rows: image_inputs(rows["image_path"], (f"question_id {q}" for q in rows["question_id"]), bank),
            reward_model,
            cfg.max_completion_length,
            cfg.per_device_eval_batch_size,
        )
    trainer = VLMGRPOTrainer(
        cfg,
        processor,
        policy,
        reward_funcs,
        prompt_dataset(vqa, bank),
        evaluation=evaluation,
        # transformers wants an eval set with eval_strategy; `VLMGRPOTrainer.evaluate` answers its questions greedily
        eval_dataset=prompt_dataset(eval_vqa, bank) if eval_vqa is not None else None,
        peft_config=language_model_lora(cfg.lora, policy.config) if cfg.lora else None,
        callbacks=callbacks,
    )
    if reward_model is not None:
        reward_model.to(trainer.accelerator.device)
    logger.info(
        "GRPO: %d prompts, %d answers each, rewards %s (weights %s) on %d process(es)",
        len(vqa),
        cfg.num_generations,
        [getattr(f, "__name__", type(f).__name__) for f in reward_funcs],
        cfg.reward_weights,
        trainer.accelerator.num_processes,
    )
    return trainer


def run(trainer: VLMGRPOTrainer) -> Path:
    cfg, out = trainer.args, Path(trainer.args.output_dir)
    started = time.time()
    try:
        _, resumed = train_resumably(trainer, out) if cfg.resume else (trainer.train(), None)
    except TrainingStopped as e:
        found = last_complete_checkpoint(out)[0] if out.is_dir() else None
        last = (
            f"the last good checkpoint is {found} (--resume true continues from it)" if found else "no checkpoint yet"
        )
        raise TrainingStopped(f"grpo stopped at step {trainer.state.global_step}: {e}; {last}") from None
    checksums = gather_object([weights_checksum(trainer.accelerator.unwrap_model(trainer.model))])
    trainer.processing_class = trainer.saved_processor  # saved as it was, not as lent to TRL for training
    save_final(trainer, out, merge_lora=cfg.lora is not None)
    if trainer.accelerator.is_main_process:
        atomic_write_json(out / SUMMARY, _summary(trainer, resumed, checksums, time.time() - started), indent=2)
    trainer.accelerator.wait_for_everyone()
    return out


def _summary(trainer: VLMGRPOTrainer, resumed: str | None, checksums: list[str], seconds: float) -> dict:
    cfg, history = trainer.args, trainer.state.log_history
    evals = [h for h in history if "eval_vqa_accuracy" in h]

    def held_out(entry):
        return {k[5:]: v for k, v in entry.items() if k.startswith("eval_")} if entry else None

    logs = [h for h in history if "reward" in h and "eval_vqa_accuracy" not in h]
    keys = ("reward", "reward_std", "rewards/reward_model/mean", "rewards/vqa_accuracy/mean", "kl", "entropy")
    best = trainer.best_record()
    if best is not None:
        best["path"] = str(Path(cfg.output_dir) / BEST)
    final = held_out(evals[-1]) if evals else None
    return {
        "sft_model_path": cfg.sft_model_path,
        "reward_model_path": cfg.reward_model_path,
        "reward_weights": cfg.reward_weights,
        "data": {
            "dir": cfg.data_dir,
            "split": cfg.train_split,
            "prompts": len(trainer.train_dataset),
            "eval_split": cfg.eval_split,
        },
        "updates": trainer.state.global_step,
        "episodes": trainer.state.global_step
        * cfg.per_device_train_batch_size
        * cfg.gradient_accumulation_steps
        * trainer.accelerator.num_processes,
        "num_generations": cfg.num_generations,
        "beta": cfg.beta,
        "first_update": {k: logs[0].get(k) for k in keys} if logs else None,
        "last_update": {k: logs[-1].get(k) for k in keys} if logs else None,
        "held_out": {"start": held_out(evals[0]) if evals else None, "final": final},
        "best": best,
        "best_metric": cfg.best_metric,
        "kl_budget": cfg.kl_budget,
        "within_kl_budget": None if cfg.kl_budget is None or not final else final["kl"] <= cfg.kl_budget,
        "policy_checksum_by_rank": checksums,
        "vision_inputs": cfg.vision_inputs,
        **run_facts(cfg, trainer, resumed, seconds),
    }


def train(cfg: VLMGRPOConfig) -> Path:
    refuse_to_overwrite(cfg.output_dir, "GRPO run", cfg.resume)
    trainer = build_trainer(cfg)
    record_config(cfg, out=cfg.output_dir)  # once the inputs are checked: a refused run writes nothing
    return run(trainer)


def main(argv=None) -> Path:
    (cfg,) = parse_config((VLMGRPOConfig,), argv, prog="vlm-rlhf grpo")
    return train(cfg)
