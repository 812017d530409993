"""`VLMPPOTrainer`: TRL's `PPOTrainer` with every forward image-conditioned, guard rails, held-out evaluation and
resumption.

TRL's `__init__` is kept (batch-size arithmetic, the policy+value wrapper, optimizer and scheduler, the private
Accelerator, DeepSpeed preparation of the reference and reward models, callbacks). Its `train()` is one method
with no place to pass images, so the loop below is written anew following TRL's algorithm (trl 1.12,
trl/experimental/ppo/ppo_trainer.py `PPOTrainer.train`): rollout with the sampling log-probs, reference
log-probs, values and scores; the missing-EOS penalty; per-token KL penalty (k1 or k3) with the score added after
the last token; optional reward whitening; GAE, or with `advantage_estimator: rloo` RLOO's group baseline
(ppo/advantages.py); whitened advantages; `num_ppo_epochs` shuffled passes with the
clipped policy and value losses; TRL's metric names. What it adds: the image of each row travels with it
(`image_idx` into the trainer's image store, sliced with every minibatch), an optional ground-truth bonus, guards,
checkpoints that resume (`accelerator.save_state`; on disk: ppo/checkpoints.py), held-out evaluation and the best
checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object
from transformers import DataCollatorWithPadding, GenerationConfig
from transformers.integrations import TensorBoardCallback
from trl.experimental.ppo import PPOTrainer
from trl.experimental.ppo.ppo_trainer import INVALID_LOGPROB, masked_mean, truncate_response
from trl.experimental.utils import first_true_indices
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.utils import selective_log_softmax

from ppo import checkpoints
from ppo.advantages import gae, leave_one_out
from ppo.config import VLMPPOConfig
from ppo.data import ImageStore, RolloutOrder, left_pad
from ppo.guards import kl_problem, ratio_problem
from ppo.model_calls import forward, generate_responses, reward_score, scalar_head, slice_images
from vlm.eval.metrics import vqa_accuracy
from vlm.training.guards import TrainingStopped, collapse_problem
from vlm.training.resume import save_policy

logger = logging.getLogger(__name__)


def decode_answers(tokenizer, responses: torch.Tensor) -> list[str]:
    """Answer texts as users read them: up to EOS/pad, first line, stripped (as `vlm.model.generation` cuts them)."""
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    return [t.split("\n")[0].strip() for t in texts]


class VLMPPOTrainer(PPOTrainer):
    def __init__(
        self,
        args: VLMPPOConfig,
        processor,
        model,
        value_model,
        prompts,
        vqa,
        store: ImageStore,
        reward_model=None,
        ref_model=None,
        reward_fn=None,
        evaluator=None,
        peft_config=None,
        callbacks=None,
    ):
        if reward_model is None and reward_fn is None:
            raise ValueError("PPO needs a reward model or a reward function")
        tokenizer = processor.tokenizer
        # Workaround, trl 1.12.0: for stop_token="eos" `PPOTrainer.__init__` reads `processing_class.eos_token_id`
        # (ppo_trainer.py:395), which a ProcessorMixin lacks (the same gap in SFT: trl#3822), so pass the id.
        # TRL's PPO is frozen at 1.12 (removed in 1.13; pyproject pins <1.13) and will get no fix: this and the two
        # workarounds below go when ppo/ stops subclassing trl.experimental.ppo.PPOTrainer.
        args.stop_token, args.stop_token_id = None, tokenizer.eos_token_id
        if args.bf16 and "ACCELERATE_MIXED_PRECISION" not in os.environ:
            # Workaround, trl 1.12.0: its private `Accelerator(gradient_accumulation_steps=...)` (ppo_trainer.py:460)
            # never sees `args.bf16`; mixed precision comes from the launcher's setting only (TRL's answer in trl#527).
            os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16"
        super().__init__(
            args=args,
            processing_class=processor,
            model=model,
            ref_model=ref_model,
            # Workaround, trl 1.12.0: `__init__` disables dropout in, prepares and moves the reward model
            # (ppo_trainer.py:489, 555, 568) and fails on None; a rule reward has no model, so an empty one stands in.
            reward_model=reward_model if reward_model is not None else torch.nn.Module(),
            train_dataset=prompts,
            value_model=value_model,
            data_collator=DataCollatorWithPadding(tokenizer),
            peft_config=peft_config,
            callbacks=callbacks,
        )
        if reward_model is None:
            self.reward_model = None
        self.tokenizer, self.vqa, self.store = tokenizer, vqa, store
        self.reward_fn, self.evaluator = reward_fn, evaluator
        self.pad_id = tokenizer.pad_token_id
        self.order = RolloutOrder(len(prompts), args.seed)
        if args.local_batch_size % args.num_generations:
            raise ValueError(
                f"num_generations ({args.num_generations}) must divide the rollouts per process "
                f"(per_device_train_batch_size x gradient_accumulation_steps = {args.local_batch_size})"
            )
        self.local_prompts = args.local_batch_size // args.num_generations
        self.start_length: float | None = None  # mean answer tokens of the starting policy (collapse guard)
        self.best: dict | None = None
        self.rows_by_update: dict[int, list[int]] = {}  # this rank's dataset rows per update (tests, resumption)
        self.generation_config = GenerationConfig(
            max_new_tokens=args.response_length,
            temperature=args.temperature + 1e-7,
            top_k=0,
            top_p=1.0,
            do_sample=True,
            eos_token_id=tokenizer.eos_token_id,  # finished rows are padded; TRL truncates after EOS either way
            pad_token_id=self.pad_id,
        )

    # ----- pieces of one update -------------------------------------------------------------------------------
    def policy(self):
        return self.accelerator.unwrap_model(self.model).policy

    def reference_context(self):
        """With a LoRA policy and no reference model, the reference is the policy with its adapter disabled."""
        return self.policy().disable_adapter() if self.ref_model is None else nullcontext()

    def minibatch_images(self, images: dict, rows) -> dict:
        """The images of a minibatch's rows (a test overrides this to pair rows with the wrong images)."""
        return slice_images(images, rows)

    def _scores(self, rows: list[int], responses, query_responses_post, images, context_length) -> dict:
        answers = decode_answers(self.tokenizer, responses)
        out = {"answers": answers}
        examples = [self.vqa[r] for r in rows]  # read once: the reward function and the VQA accuracy both need them
        if self.reward_fn is not None:
            scores = self.reward_fn(examples, answers).to(responses.device, torch.float32)
        else:
            scores = torch.cat(
                [
                    reward_score(
                        self.reward_model,
                        qr,
                        slice_images(images, slice(i, i + len(qr))),
                        self.pad_id,
                        self.tokenizer.eos_token_id,
                        context_length,
                    ).float()
                    for i, qr in self._chunks(query_responses_post)
                ]
            )
        out["model_scores"] = scores.clone()
        if "answers" in self.vqa.column_names:
            accuracy = torch.tensor(
                [vqa_accuracy(a, e["answers"]) for e, a in zip(examples, answers)], device=scores.device
            )
            out["vqa_accuracy"] = accuracy
            scores = scores + self.args.ground_truth_weight * accuracy
        out["scores"] = scores
        return out

    def _chunks(self, tensor):
        step = self.args.local_rollout_forward_batch_size
        return [(i, tensor[i : i + step]) for i in range(0, tensor.shape[0], step)]

    @torch.no_grad()
    def rollout(self, rows: list[int]) -> dict:
        """Sample answers for `rows` and compute everything the update needs (TRL's rollout phase, with images)."""
        args, device = self.args, self.accelerator.device
        examples = self.train_dataset[rows]
        queries = left_pad(examples["input_ids"], self.pad_id).to(device)
        images = self.store.inputs(torch.tensor(examples["image_idx"]), device)
        ctx = queries.shape[1]
        with unwrap_model_for_generation(
            self.model, self.accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation
        ) as unwrapped:
            query_responses, logprobs = generate_responses(
                unwrapped.policy,
                queries,
                images,
                self.pad_id,
                self.generation_config,
                args.local_rollout_forward_batch_size,
            )
        responses = query_responses[:, ctx:]
        ref_logprobs, values = [], []
        value_model = self.accelerator.unwrap_model(self.model).value_model
        for i, qr in self._chunks(query_responses):
            img = slice_images(images, slice(i, i + len(qr)))
            with self.reference_context():
                ref = forward(self.ref_model or self.policy(), qr, img, self.pad_id)
            ref_logits = ref.logits[:, ctx - 1 : -1].float() / (args.temperature + 1e-7)
            ref_logprobs.append(selective_log_softmax(ref_logits, qr[:, ctx:]))
            if args.advantage_estimator == "gae":  # RLOO's baseline is the other answers, not a value model
                values.append(scalar_head(value_model, qr, img, self.pad_id)[:, ctx - 1 : -1].float())
        ref_logprobs = torch.cat(ref_logprobs)
        values = torch.cat(values) if values else torch.zeros_like(ref_logprobs)

        post = truncate_response(self.stop_token_id, self.pad_id, responses)
        sequence_lengths = first_true_indices(post == self.pad_id) - 1
        scored = self._scores(rows, post, torch.cat((queries, post), 1), images, ctx)
        scores = scored["scores"]
        has_eos = (post == self.tokenizer.eos_token_id).any(-1)
        if args.missing_eos_penalty is not None:
            scores[~has_eos] -= args.missing_eos_penalty

        # Masks, KL penalty, score at the last token, GAE: TRL's formulas (see the module docstring).
        idx = torch.arange(responses.shape[1], device=device).repeat(responses.shape[0], 1)
        padding_mask = idx > sequence_lengths.unsqueeze(1)
        padding_mask_p1 = idx > (sequence_lengths + 1).unsqueeze(1)
        logprobs = logprobs.masked_fill(padding_mask, INVALID_LOGPROB)
        ref_logprobs = ref_logprobs.masked_fill(padding_mask, INVALID_LOGPROB)
        values = values.masked_fill(padding_mask_p1, 0)
        logr = ref_logprobs - logprobs
        kl = -logr if args.kl_estimator == "k1" else logr.exp() - 1 - logr
        non_score_reward = -args.kl_coef * kl
        if args.advantage_estimator == "rloo":
            advantages, returns = leave_one_out(non_score_reward, scores, padding_mask, args.num_generations)
        else:
            advantages, returns = gae(
                non_score_reward,
                scores,
                values,
                sequence_lengths,
                padding_mask,
                padding_mask_p1,
                args.gamma,
                args.lam,
                args.whiten_rewards,
            )
        return {
            "rows": rows,
            "queries": queries,
            "images": images,
            "query_responses": query_responses,
            "responses": responses,
            "logprobs": logprobs,
            "values": values,
            "returns": returns,
            "advantages": advantages,
            "padding_mask": padding_mask,
            "padding_mask_p1": padding_mask_p1,
            "kl": kl,
            "non_score_reward": non_score_reward,
            "scores": scores,
            "has_eos": has_eos,
            "sequence_lengths": sequence_lengths,
            **{k: v for k, v in scored.items() if k != "scores"},
        }

    def optimise(self, batch: dict, rng: np.random.Generator) -> dict:
        """`num_ppo_epochs` shuffled passes over the rollout in micro-batches (TRL's update phase, one minibatch)."""
        args, acc, model = self.args, self.accelerator, self.model
        ctx = batch["queries"].shape[1]
        vf_coef = args.vf_coef if args.advantage_estimator == "gae" else 0.0  # RLOO trains no value model
        shape = (args.num_ppo_epochs, args.gradient_accumulation_steps)
        stats = {
            k: torch.zeros(shape, device=acc.device)
            for k in ("approxkl", "pg_clipfrac", "pg_loss", "vf_loss", "vf_clipfrac", "entropy", "ratio")
        }
        for epoch in range(args.num_ppo_epochs):
            order = rng.permutation(args.local_batch_size)
            for micro, start in enumerate(range(0, args.local_batch_size, args.per_device_train_batch_size)):
                mb = order[start : start + args.per_device_train_batch_size]
                pad_mask, pad_mask_p1 = batch["padding_mask"][mb], batch["padding_mask_p1"][mb]
                with acc.accumulate(model):
                    output, vpred_all = forward(
                        model, batch["query_responses"][mb], self.minibatch_images(batch["images"], mb), self.pad_id
                    )
                    logits = output.logits[:, ctx - 1 : -1].float() / (args.temperature + 1e-7)
                    new_logprobs = selective_log_softmax(logits, batch["responses"][mb]).masked_fill(
                        pad_mask, INVALID_LOGPROB
                    )
                    diff = new_logprobs - batch["logprobs"][mb]
                    ratio = diff.exp()
                    if epoch == 0 and micro == 0:
                        deviation = masked_mean((ratio - 1).abs(), ~pad_mask).detach()
                        worst = acc.gather(deviation.reshape(1)).max().item()
                        problem = ratio_problem(worst, args.ratio_tolerance)
                        if problem:
                            raise TrainingStopped(problem)
                    vpred = vpred_all[:, ctx - 1 : -1].squeeze(-1).float().masked_fill(pad_mask_p1, 0)
                    old_values, returns = batch["values"][mb], batch["returns"][mb]
                    vpred_clipped = torch.clamp(
                        vpred, old_values - args.cliprange_value, old_values + args.cliprange_value
                    )
                    vf_losses = torch.square(vpred - returns), torch.square(vpred_clipped - returns)
                    vf_loss = 0.5 * masked_mean(torch.max(*vf_losses), ~pad_mask_p1)
                    advantages = batch["advantages"][mb]
                    pg_losses = (
                        -advantages * ratio,
                        -advantages * torch.clamp(ratio, 1.0 - args.cliprange, 1.0 + args.cliprange),
                    )
                    pg_loss = masked_mean(torch.max(*pg_losses), ~pad_mask)
                    acc.backward(pg_loss + vf_coef * vf_loss)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                    with torch.no_grad():
                        probs = torch.softmax(logits, -1)
                        entropy = torch.logsumexp(logits, -1) - (probs * logits).sum(-1)
                        for key, value in (
                            ("approxkl", 0.5 * (diff**2).mean()),
                            ("pg_clipfrac", masked_mean((pg_losses[1] > pg_losses[0]).float(), ~pad_mask)),
                            ("pg_loss", pg_loss),
                            ("vf_loss", vf_loss),
                            ("vf_clipfrac", masked_mean((vf_losses[1] > vf_losses[0]).float(), ~pad_mask_p1)),
                            ("entropy", entropy.mean()),
                            ("ratio", ratio.mean()),
                        ):
                            stats[key][epoch, micro] = value
        return stats

    def metrics(self, batch: dict, stats: dict, started: float) -> dict:
        """TRL's metrics, each gathered across ranks (means of per-rank means; counts summed)."""
        acc = self.accelerator

        def mean(t):
            return acc.gather_for_metrics(t.reshape(-1) if t.dim() else t.reshape(1)).float().mean().item()

        valid = ~batch["padding_mask"]
        non_score = batch["non_score_reward"].sum(1).mean()
        m = {
            "eps": int(self.state.episode / max(time.time() - started, 1e-9)),
            "objective/kl": mean(batch["kl"].sum(1).mean()),
            "objective/entropy": mean((-batch["logprobs"] * valid).sum(1).mean()),
            "objective/non_score_reward": mean(non_score),
            "objective/rlhf_reward": mean(non_score + batch["scores"].mean()),
            "objective/scores": mean(batch["scores"].mean()),
            "policy/approxkl_avg": mean(stats["approxkl"]),
            "policy/clipfrac_avg": mean(stats["pg_clipfrac"]),
            "loss/policy_avg": mean(stats["pg_loss"]),
            "loss/value_avg": mean(stats["vf_loss"]),
            "val/clipfrac_avg": mean(stats["vf_clipfrac"]),
            "policy/entropy_avg": mean(stats["entropy"]),
            "val/ratio": mean(stats["ratio"]),
            "val/ratio_var": acc.gather_for_metrics(stats["ratio"]).var().item(),
            "val/num_eos_tokens": int(acc.reduce(batch["has_eos"].sum(), reduction="sum").item()),
            "val/mean_answer_tokens": mean((batch["sequence_lengths"] + 1).float().mean()),
            "lr": self.lr_scheduler.get_last_lr()[0],
            "episode": self.state.episode,
        }
        if self.reward_model is not None:  # the reward model's own part of the score (the monitor's left axis)
            m["objective/reward_model_score"] = mean(batch["model_scores"].mean())
        if "vqa_accuracy" in batch:
            m["objective/vqa_accuracy"] = mean(batch["vqa_accuracy"].mean())
        return m

    # ----- checkpoints (ppo/checkpoints.py), evaluation, samples ------------------------------------------------
    def checkpoint_dirs(self) -> list[Path]:
        return checkpoints.complete_checkpoints(self.args.output_dir)

    def save_checkpoint(self) -> Path:
        """Policy + value + optimizer + scheduler + RNG (accelerate's state) and the loop's own state."""
        acc = self.accelerator
        state = {
            "global_step": self.state.global_step,
            "episode": self.state.episode,
            "log_history": self.state.log_history,
            "best": self.best,
            "start_length": self.start_length,
            "reward_check": getattr(self, "reward_check", None),  # measured once, at the start of the run
            "world_size": acc.num_processes,
        }
        return checkpoints.save_checkpoint(
            acc, self.args.output_dir, self.state.global_step, state, self.args.save_total_limit
        )

    def resume(self) -> int:
        """Load the newest checkpoint; returns the update to continue from (0 when there is none)."""
        found = checkpoints.load_latest_checkpoint(self.accelerator, self.args.output_dir)
        if found is None:
            logger.info("no checkpoint in %s: starting from the beginning", self.args.output_dir)
            return 0
        last, state = found
        self.state.global_step, self.state.episode = state["global_step"], state["episode"]
        # The scheduler is a function of the update: rebuilt by stepping, not unpickled. Accelerate would load a
        # registered one with `torch.load(weights_only=False)` (accelerate 1.15 `load_custom_state`), which runs
        # whatever code a checkpoint folder from someone else holds.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")  # "called before optimizer.step()"
            for _ in range(state["global_step"]):
                self.lr_scheduler.step()
        self.state.log_history = state["log_history"]
        self.best, self.start_length = state["best"], state["start_length"]
        self.reward_check = state.get("reward_check")
        self.resumed_from = str(last)
        logger.info("resumed from %s at update %d", last, state["global_step"])
        return state["global_step"]

    def evaluate_policy(self) -> dict:
        if self.evaluator is None:
            return {}
        self.model.eval()
        metrics = self.evaluator(self)
        self.model.train()
        self.log({f"eval/{k}": v for k, v in metrics.items()})
        step = self.state.global_step
        self.best = checkpoints.update_best(self.accelerator, self.best, metrics, self.args.best_metric, step)
        if self.best["step"] == step:
            self.save_policy(Path(self.args.output_dir) / checkpoints.BEST)
        return metrics

    def save_policy(self, out: Path, replace: bool = True) -> None:
        save_policy(self.accelerator, self.policy(), self.processing_class, out, replace)

    def log_samples(self, batch: dict) -> list[dict]:
        """Every rollout of the update, gathered from all ranks: image, question, answer and its rewards; appended
        to `samples.jsonl` and shown as a table in TensorBoard."""
        rows = [
            {
                "step": self.state.global_step,
                "question_id": self.vqa[r]["question_id"],
                "image": Path(self.vqa[r]["image_path"]).name,
                "question": self.vqa[r]["question"],
                "answer": a,
                "score": round(float(s), 5),
                "model_score": round(float(ms), 5),
                "kl": round(float(k), 5),
            }
            for r, a, s, ms, k in zip(
                batch["rows"],
                batch["answers"],
                batch["scores"].tolist(),
                batch["model_scores"].tolist(),
                batch["kl"].sum(1).tolist(),
            )
        ]
        if "vqa_accuracy" in batch:  # the truth beside the reward (the over-optimisation watch, ppo/monitor.py)
            for row, accuracy in zip(rows, batch["vqa_accuracy"].tolist()):
                row["vqa_accuracy"] = round(float(accuracy), 5)
        rows = gather_object(rows)
        if self.accelerator.is_main_process:
            with open(Path(self.args.output_dir) / "samples.jsonl", "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            header = "| image | question | answer | score | kl |\n|---|---|---|---|---|\n"
            table = header + "\n".join(
                f"| {r['image']} | {r['question']} | {r['answer']} | {r['score']:.3f} | {r['kl']:.3f} |"
                for r in rows[:16]
            )
            for cb in self.callback_handler.callbacks:
                if isinstance(cb, TensorBoardCallback) and cb.tb_writer is not None:
                    cb.tb_writer.add_text("samples", table, self.state.global_step)
        return rows

    # ----- the loop ---------------------------------------------------------------------------------------------
    def train(self):
        args, acc = self.args, self.accelerator
        self.resumed_from = None
        first = self.resume() if args.resume else 0
        self.state.max_steps = args.num_total_batches
        for name in ("logging_steps", "eval_steps", "save_steps"):
            value = getattr(args, name) or 1
            setattr(self.state, name, math.ceil(self.state.max_steps * value) if value < 1 else int(value))
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        self.model.train()
        elapsed = [h["seconds"] for h in self.state.log_history if "seconds" in h]  # before an interruption
        started = time.time() - (elapsed[-1] if elapsed else 0)
        if first == 0 and self.evaluator is not None:
            self.start_metrics = self.evaluate_policy()  # the starting policy, the baseline the best must beat
        for update in range(first, args.num_total_batches):
            # Every random draw of the update comes from (seed, rank, update): a resumed run repeats it exactly.
            seed = args.seed + 100003 * acc.process_index + 7919 * update
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            prompts = self.order.rows(update, self.local_prompts, acc.process_index, acc.num_processes)
            rows = [r for r in prompts for _ in range(args.num_generations)]  # each prompt's answers side by side
            self.rows_by_update[update + 1] = rows
            self.state.episode += args.batch_size
            batch = self.rollout(rows)
            stats = self.optimise(batch, rng)
            metrics = self.metrics(batch, stats, started)
            self.state.global_step += 1
            self.state.epoch = self.state.episode / self.train_dataset_len
            metrics["seconds"] = round(time.time() - started, 2)
            self.log(metrics)
            answers = gather_object(batch["answers"])
            if self.start_length is None:
                self.start_length = metrics["val/mean_answer_tokens"]
            problem = kl_problem(metrics["objective/kl"], args.kl_tolerance) or collapse_problem(
                answers, metrics["val/mean_answer_tokens"], self.start_length, args.collapse_length_factor
            )
            if problem:
                raise TrainingStopped(problem)
            if args.sample_every and self.state.global_step % args.sample_every == 0:
                self.log_samples(batch)
            self.lr_scheduler.step()
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            last = self.state.global_step == args.num_total_batches
            if self.control.should_evaluate or (last and args.eval_strategy != "no"):
                self.evaluate_policy()
                self.control = self.callback_handler.on_evaluate(args, self.state, self.control, metrics={})
            if self.control.should_save or (last and args.save_strategy != "no"):
                self.save_checkpoint()
                self.control = self.callback_handler.on_save(args, self.state, self.control)
        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        return self.state
