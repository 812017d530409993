"""Held-out evaluation during PPO (`vlm.eval.held_out.held_out_metrics`) on the run's image store, scored by the
reward model, or by the rule reward of a run without one."""

from __future__ import annotations

from trl.models.utils import unwrap_model_for_generation

from vlm.eval.held_out import held_out_metrics
from vlm.model.reward_scoring import score_answers


class HeldOutEvaluation:
    def __init__(self, vqa, store, max_new_tokens: int, batch_size: int = 64):
        self.vqa, self.store = vqa, store
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __call__(self, trainer) -> dict:
        processor = trainer.processing_class

        def score(index, images, questions, answers):
            if trainer.reward_model is not None:
                return score_answers(trainer.reward_model, processor, images, questions, answers, self.batch_size)
            return trainer.reward_fn([self.vqa[i] for i in index], answers)

        with unwrap_model_for_generation(
            trainer.model, trainer.accelerator, gather_deepspeed3_params=trainer.args.ds3_gather_for_generation
        ) as unwrapped:
            return held_out_metrics(
                trainer.accelerator,
                unwrapped.policy,
                processor,
                self.vqa,
                lambda rows: self.store.images(rows["image_path"]),
                score,
                reference=trainer.ref_model,
                reference_context=trainer.reference_context,
                kl_coef=trainer.args.kl_coef,
                max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
            )
