"""The two sides of the PPO iteration benchmark, each a trainer run under a `PhaseClock`: ours (`run_ours`, the
image-conditioned `ppo.train.build_trainer`) and TRL's text-only `PPOTrainer` (`run_trl`), with the same
`PPOConfig` fields (`shared_args`). Each patches the names its trainer's loop looks up (see timing.py) and checks,
after training, that every wrapped function ran in every timed iteration."""

from __future__ import annotations

import gc
import math
import types
from pathlib import Path

import torch
from ppo_assets import asset_paths
from timing import PhaseClock, on_cuda, patched, quiet, summarise, timing_callback


def shared_args(args) -> dict:
    """The PPOConfig fields both trainers get alike."""
    return dict(
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.batch // args.micro_batch,
        num_mini_batches=1,
        local_rollout_forward_batch_size=args.rollout_batch,
        num_ppo_epochs=args.ppo_epochs,
        response_length=args.response_length,
        temperature=args.temperature,
        missing_eos_penalty=args.missing_eos_penalty,
        total_episodes=args.iterations * args.batch,
        num_sample_generations=0,
        report_to="none",
        bf16=on_cuda(),
        save_strategy="no",
        eval_strategy="no",
        seed=args.seed,
    )


def run_ours(args, work: Path) -> dict:
    import ppo.trainer as ours
    from ppo.config import VLMPPOConfig
    from ppo.train import build_trainer

    assets = asset_paths(work)
    guards = {}
    if not args.keep_guards:
        guards = dict(ratio_tolerance=math.inf, kl_tolerance=math.inf, collapse_length_factor=math.inf)
    cfg = VLMPPOConfig(
        output_dir=str(work / "ours-out"),
        sft_model_path=str(assets["policy"]),
        reward_model_path=str(assets["reward"]),
        data_dir=str(assets["data"]),
        eval_split=None,
        vision_inputs=args.vision_inputs,
        vision_feature_cache=str(work / "feature-cache"),
        sample_every=0,
        use_cpu=not on_cuda(),
        **guards,
        **shared_args(args),
    )
    clock = PhaseClock()
    torch.manual_seed(args.seed)
    trainer = build_trainer(cfg, callbacks=[timing_callback(clock)])
    quiet(trainer)
    # The prompt widths of the rollouts (left-padded to the widest row of each): TRL's prompts get this length.
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    widths = [max(lengths[r] for r in trainer.order.rows(u, args.batch, 0, 1)) for u in range(cfg.num_total_batches)]
    info = {
        "prompt_widths": widths,
        "prompt_lengths_min_mean_max": [min(lengths), sum(lengths) / len(lengths), max(lengths)],
        "image_tokens": trainer.policy().config.num_image_tokens,
    }

    def in_rollout():
        return not torch.is_grad_enabled()

    def record_shape(clock, out):
        clock.notes["query_response_shape"].append(list(out[0].shape))

    def record_deviation(deviation, tolerance):
        clock.notes["first_minibatch_ratio_deviation"].append(float(deviation))
        return original_ratio_problem(deviation, tolerance)

    # `ours` is ppo.trainer: the module-level names below are the ones its loop looks up (the checkpoint code, in
    # ppo.checkpoints, is not timed: the benchmark saves none).
    original_ratio_problem = ours.ratio_problem
    with patched(
        clock.wrap_attribute(trainer, "optimise", "update"),
        clock.wrap_attribute(trainer, "metrics", "metrics + log"),
        clock.wrap_attribute(trainer, "log", "metrics + log"),
        clock.wrap_attribute(trainer.store, "inputs", "feature fetch"),
        clock.wrap_attribute(ours, "generate_responses", "generation", note=record_shape),
        clock.wrap_attribute(ours, "forward", "scoring", when=in_rollout),
        clock.wrap_attribute(ours, "scalar_head", "scoring"),
        clock.wrap_attribute(ours, "reward_score", "scoring"),
        # in the rollout: the reference log-probs (in the update it runs inside `optimise`, timed there)
        clock.wrap_attribute(ours, "selective_log_softmax", "scoring", when=in_rollout),
        clock.wrap_attribute(ours, "decode_answers", "decode answers"),
        clock.wrap_attribute(ours, "vqa_accuracy", "VQA accuracy", synchronise=False),
        (ours, "ratio_problem", clock.counted(record_deviation, "ppo.trainer.ratio_problem", "a reading, untimed")),
    ):
        trainer.train()
    clock.check_calls()
    info.update(clock.notes)
    info["log"] = [h for h in trainer.state.log_history if "objective/kl" in h]
    info["text_config"] = trainer.policy().config.text_config.to_dict()
    return {**summarise(clock), "info": info}


def run_trl(args, work: Path, prompt_length: int) -> dict:
    import trl.experimental.ppo.ppo_trainer as theirs
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoProcessor
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from vlm import VLMConfig

    policy_dir = asset_paths(work)["policy"]
    tokenizer = AutoProcessor.from_pretrained(policy_dir).tokenizer  # the policy's own tokenizer and ids
    text_config = VLMConfig.from_pretrained(policy_dir).text_config.to_dict()
    torch.manual_seed(args.seed)
    config = {k: v for k, v in text_config.items() if k not in ("architectures", "id2label", "label2id")}
    config.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model_type = config.pop("model_type")
    lm_config = AutoConfig.for_model(model_type, **config)
    scorer_config = AutoConfig.for_model(model_type, **config, num_labels=1)
    policy = AutoModelForCausalLM.from_config(lm_config)
    value = AutoModelForSequenceClassification.from_config(scorer_config)
    reward = AutoModelForSequenceClassification.from_config(scorer_config)
    special = set(tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    generator = torch.Generator().manual_seed(args.seed)
    prompts = allowed[torch.randint(len(allowed), (max(args.batch, 64), prompt_length), generator=generator)]
    cfg = PPOConfig(
        output_dir=str(work / "trl-out"),
        stop_token="eos",
        use_cpu=not on_cuda(),
        **shared_args(args),
    )
    clock = PhaseClock()
    trainer = PPOTrainer(
        args=cfg,
        processing_class=tokenizer,
        model=policy,
        ref_model=None,
        reward_model=reward,
        value_model=value,
        train_dataset=Dataset.from_dict({"input_ids": prompts.tolist()}),
        callbacks=[timing_callback(clock)],
    )
    quiet(trainer)
    sampled = {}  # storage of the generation's logits: the log-probs taken from them belong to generation

    def timed_forward(model, query_responses, pad_token_id):
        if torch.is_grad_enabled():  # the PPO epochs: open the update window at the first one
            if clock.active is None:
                clock.begin_window("update")
            return original_forward(model, query_responses, pad_token_id)
        return scoring_forward(model, query_responses, pad_token_id)

    def timed_log_softmax(logits, index):
        if torch.is_grad_enabled():
            return original_log_softmax(logits, index)
        from_generation = logits.untyped_storage().data_ptr() == sampled.get("ptr")
        return (generation_log_softmax if from_generation else scoring_log_softmax)(logits, index)

    def gather_for_metrics(*a, **k):
        if clock.active == "update":  # the first metric after the PPO epochs closes the window
            clock.end_window()
        return original_gather(*a, **k)

    def record_generation(clock, out):
        clock.notes["query_response_shape"].append(list(out[0].shape))
        sampled["ptr"] = out[1].untyped_storage().data_ptr()

    # `theirs` is trl.experimental.ppo.ppo_trainer: the module-level names below are the ones its loop looks up.
    module = theirs.__name__
    original_forward, original_log_softmax = theirs.forward, theirs.selective_log_softmax
    scoring_forward = clock.wrap(original_forward, "scoring", name=f"{module}.forward without grad")
    generation_log_softmax = clock.wrap(
        original_log_softmax, "generation", name=f"{module}.selective_log_softmax of the sampling logits"
    )
    scoring_log_softmax = clock.wrap(
        original_log_softmax, "scoring", name=f"{module}.selective_log_softmax of the reference logits"
    )
    collect = clock.wrap(gc.collect, "gc.collect", name=f"{module}.gc.collect")
    original_gather = trainer.accelerator.gather_for_metrics
    with patched(
        (
            trainer.accelerator,
            "gather_for_metrics",
            clock.counted(gather_for_metrics, "Accelerator.gather_for_metrics", "the end of the update window"),
        ),
        clock.wrap_attribute(trainer, "log", "metrics + log"),
        clock.wrap_attribute(theirs, "batch_generation", "generation", note=record_generation),
        (theirs, "forward", clock.counted(timed_forward, f"{module}.forward", "update window / scoring")),
        (
            theirs,
            "selective_log_softmax",
            clock.counted(timed_log_softmax, f"{module}.selective_log_softmax", "generation / scoring / update"),
        ),
        clock.wrap_attribute(theirs, "get_reward", "scoring"),
        clock.wrap_attribute(theirs, "empty_cache", "empty_cache"),
        (theirs, "gc", types.SimpleNamespace(collect=collect)),
    ):
        trainer.train()
    clock.check_calls()
    info = dict(clock.notes)
    info["log"] = [h for h in trainer.state.log_history if "objective/kl" in h]
    info["python_objects"] = len(gc.get_objects())  # what each gc.collect() walks
    return {**summarise(clock), "info": info}
