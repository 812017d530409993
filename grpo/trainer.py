"""`VLMGRPOTrainer`: TRL's `GRPOTrainer` on this project's VLM and processor as they are.

TRL's own loop runs unchanged: prompts repeated `num_generations` times, sampling, rewards, group-normalised
advantages, the clipped loss with the optional KL to the reference, its metrics and checkpoints. What is added:

- A lent processor (`TRLVQAProcessor`): `VQA_TEMPLATE` (`vlm/model/chat_template.py`) renders each prompt as the
  `Q: <image> {question} A:` ids the policy was trained on, and cached tower features come out under
  `pixel_values`, the one image key TRL carries from rollout to every log-prob pass (trl/trainer/grpo_trainer.py
  `_generate_and_score_completions`, `_compute_loss`, trl 1.12: `vision_features` would be dropped before the loss,
  which would then see no image). `VLMModel` reads a `[B, N, D]` `pixel_values` as features. Checkpoints and saved
  policies keep the processor as it was.
- The collapse guard PPO has (`CollapseGuard`): every answer alike, or their mean length far from the start's, stops
  the run naming its last good checkpoint. (PPO's ratio guard has nothing to read here: with `num_iterations: 1`
  TRL's ratio is 1 by construction; its KL estimate, k3, cannot be negative.)
- Held-out evaluation (greedy VQA accuracy, reward, KL to the start policy) in place of TRL's sampled-reward
  evaluation, and `best/`: the policy of the best evaluation by `best_metric`.
"""

from __future__ import annotations

import copy
import json
import logging
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate.utils import gather_object
from transformers import AutoModelForCausalLM, TrainerCallback
from trl import GRPOTrainer
from trl.models.utils import unwrap_model_for_generation

from vlm.eval.held_out import held_out_metrics
from vlm.eval.metrics import vqa_accuracy
from vlm.model.chat_template import VQA_TEMPLATE
from vlm.model.processing_vlm import VLMProcessor
from vlm.model.reward_scoring import score_answers
from vlm.training.guards import TrainingStopped, collapse_problem
from vlm.training.resume import save_policy

trl_logger = logging.getLogger(GRPOTrainer.__module__)
BEST, BEST_RECORD = "best", "best.json"


def _not_about_init_kwargs(record: logging.LogRecord) -> bool:
    return "model_init_kwargs" not in record.getMessage()


class TRLVQAProcessor(VLMProcessor):
    """The policy's processor as TRL's GRPO needs it: the VQA prompt as its chat template, and cached features under
    `pixel_values`, the one image key TRL carries from rollout to every log-prob pass (`VLMModel` reads a `[B, N, D]`
    `pixel_values` as features). Lent to the trainer only; never saved."""

    def __call__(self, *args, **kwargs):
        out = super().__call__(*args, **kwargs)
        if "vision_features" in out:
            out["pixel_values"] = out.pop("vision_features")
        return out


class _EvaluateAtStart(TrainerCallback):
    """The starting policy's held-out figures, the baseline the best must beat (a resumed run has them)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0 and self.trainer.evaluation is not None:
            self.trainer.evaluate()


class CollapseGuard(TrainerCallback):
    """Stops the run (`TrainingStopped`) when an update's answers collapsed: all the same, or a mean length outside
    [start / factor, start x factor] of the first update's (`vlm.training.guards`, as PPO's loop checks)."""

    def __init__(self, trainer, factor: float):
        self.trainer, self.factor = trainer, factor

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "completions/mean_length" not in logs:
            return
        lengths = [h["completions/mean_length"] for h in state.log_history if "completions/mean_length" in h]
        # TRL keeps the texts of the last generation batch, every rank's, for its completions table
        answers = [text.split("\n")[0].strip() for text in self.trainer._logs["completion"]]
        problem = collapse_problem(answers, logs["completions/mean_length"], lengths[0], self.factor)
        if problem:
            raise TrainingStopped(problem)


class VLMGRPOTrainer(GRPOTrainer):
    def __init__(self, args, processor, model, reward_funcs, train_dataset, evaluation=None, **kwargs):
        """`processor`: the policy's, as saved with it. `evaluation`: a `HeldOutVQA` or None."""
        chat_processor = TRLVQAProcessor(
            processor.image_processor,
            processor.tokenizer,
            processor.num_image_tokens,
            chat_template=VQA_TEMPLATE,
            image_token=processor.image_token,
        )
        self.saved_processor = processor
        self.evaluation = evaluation
        # Workaround, trl 1.12: with beta > 0 `__init__` loads the reference from the policy's path and takes its
        # class from `transformers.<architectures[0]>` or the config's `auto_map` (trl/trainer/utils.py
        # `create_model_from_path`); a model family registered with the Auto classes has neither, so the Auto class
        # is named for that one call (and taken back: the config is recorded as the user wrote it). TRL's warning
        # that `model_init_kwargs` are ignored for the policy is then about this, and is dropped.
        init_kwargs = args.model_init_kwargs
        args.model_init_kwargs = {**(init_kwargs or {}), "architecture": AutoModelForCausalLM}
        trl_logger.addFilter(_not_about_init_kwargs)
        try:
            super().__init__(
                model=model,
                reward_funcs=reward_funcs,
                args=args,
                train_dataset=train_dataset,
                processing_class=chat_processor,
                **kwargs,
            )
        finally:
            args.model_init_kwargs = init_kwargs
            trl_logger.removeFilter(_not_about_init_kwargs)
        self.reference = self.ref_model
        if evaluation is not None and self.ref_model is None and not hasattr(self.model, "peft_config"):
            # beta = 0 loads no reference; the held-out KL is still measured against the start policy.
            self.reference = copy.deepcopy(self.accelerator.unwrap_model(self.model)).requires_grad_(False).eval()
        self.add_callback(_EvaluateAtStart(self))
        self.add_callback(CollapseGuard(self, args.collapse_length_factor))

    # ----- evaluation and the best policy -----------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        if self.evaluation is None:
            return {}
        self.model.eval()
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.evaluation(self).items()}
        self.model.train()
        self.log(metrics)
        best = self.best_record()
        metric = self.args.best_metric
        # the first evaluation of a run starts the record (a `best/` left by an attempt that never checkpointed
        # is replaced); a resumed run goes on from the record on disk
        better = (
            best is None
            or self.state.global_step == 0
            or metrics[f"{metric_key_prefix}_{metric}"] > best["metrics"][metric]
        )
        if gather_object([better])[0]:  # rank 0 decides, so every rank takes part in the save
            record = {
                "step": self.state.global_step,
                "metrics": {k[len(metric_key_prefix) + 1 :]: v for k, v in metrics.items()},
            }
            policy = self.accelerator.unwrap_model(self.model)
            out = Path(self.args.output_dir) / BEST
            save_policy(self.accelerator, policy, self.saved_processor, out, records={BEST_RECORD: record})
        return metrics

    def best_record(self) -> dict | None:
        """`{"step", "metrics"}` of the best evaluation so far (`best/best.json`), or None before the first."""
        path = Path(self.args.output_dir) / BEST / BEST_RECORD
        return json.loads(path.read_text()) if path.is_file() else None

    def _save(self, output_dir=None, state_dict=None):
        """Checkpoints keep the processor as it was (the VQA template is only lent for TRL's rendering)."""
        lent, self.processing_class = self.processing_class, self.saved_processor
        try:
            super()._save(output_dir, state_dict)
        finally:
            self.processing_class = lent


class HeldOutVQA:
    """Called with the trainer at each evaluation: `held_out_metrics` on `vqa`, images from `images_of(rows)`,
    answers scored by the reward model (or, without one, by their VQA accuracy)."""

    def __init__(self, vqa, images_of, reward_model=None, max_new_tokens: int = 8, batch_size: int = 64):
        self.vqa, self.images_of, self.reward_model = vqa, images_of, reward_model
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __call__(self, trainer: VLMGRPOTrainer) -> dict:
        processor = trainer.saved_processor

        def score(index, images, questions, answers):
            if self.reward_model is not None:
                return score_answers(self.reward_model, processor, images, questions, answers, self.batch_size)
            return torch.tensor([vqa_accuracy(a, self.vqa[i]["answers"]) for i, a in zip(index, answers)])

        policy = trainer.accelerator.unwrap_model(trainer.model)
        reference_context = policy.disable_adapter if trainer.reference is None else nullcontext
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as unwrapped:
            return held_out_metrics(
                trainer.accelerator,
                unwrapped,
                processor,
                self.vqa,
                self.images_of,
                score,
                reference=trainer.reference,
                reference_context=reference_context,
                kl_coef=trainer.beta,
                max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
            )
