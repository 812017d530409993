"""The GRPO side of the RL step benchmark (rl_step.py): one `grpo.train.build_trainer` run under a `PhaseClock`,
on the same assets as the PPO side (ppo_assets.py). An iteration is one optimiser step: `num_generations` answers to
each of `batch / num_generations` questions, sampled, scored and trained on once (TRL's `num_iterations: 1`)."""

from __future__ import annotations

from pathlib import Path

import torch
from ppo_assets import asset_paths
from timing import PhaseClock, on_cuda, patched, quiet, summarise, timing_callback
from transformers import TrainerCallback


def run_grpo(args, work: Path) -> dict:
    from grpo.config import VLMGRPOConfig
    from grpo.train import build_trainer

    assets = asset_paths(work)
    cfg = VLMGRPOConfig(
        output_dir=str(work / "grpo-out"),
        sft_model_path=str(assets["policy"]),
        reward_model_path=str(assets["reward"]),
        data_dir=str(assets["data"]),
        eval_split=None,
        eval_strategy="no",
        save_strategy="no",
        vision_inputs=args.vision_inputs,
        vision_feature_cache=str(work / "feature-cache"),
        num_generations=args.num_generations,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.batch // args.micro_batch,
        per_device_eval_batch_size=args.rollout_batch,
        max_completion_length=args.response_length,
        temperature=args.temperature,
        beta=0.05,  # a reference pass, as PPO's KL penalty needs one
        max_steps=args.iterations,
        report_to="none",
        bf16=on_cuda(),
        use_cpu=not on_cuda(),
        seed=args.seed,
    )
    clock = PhaseClock()

    def with_grad():
        return torch.is_grad_enabled()

    def without_grad():
        return not torch.is_grad_enabled()

    class TimeOptimizerSteps(TrainerCallback):  # the optimizer exists once training begins
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            optimizer.step = clock.wrap(optimizer.step, "update", name="optimizer.step")

    torch.manual_seed(args.seed)
    trainer = build_trainer(cfg, callbacks=[TimeOptimizerSteps(), timing_callback(clock)])
    quiet(trainer)
    with patched(
        clock.wrap_attribute(trainer, "_generate_single_turn", "generation"),
        clock.wrap_attribute(trainer, "_calculate_rewards", "scoring"),
        # without grad: the reference's log-probs of the rollout; with grad: the loss pass
        clock.wrap_attribute(trainer, "_get_per_token_logps_and_entropies", "scoring", when=without_grad),
        clock.wrap_attribute(trainer, "compute_loss", "update", when=with_grad),
        clock.wrap_attribute(trainer.accelerator, "backward", "update"),
    ):
        trainer.train()
    clock.check_calls()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    info = {"log": logs, "text_config": trainer.model.config.text_config.to_dict()}
    return {**summarise(clock), "info": info}
