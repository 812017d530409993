"""One PPO iteration of the image-conditioned trainer against one of TRL's text-only `PPOTrainer`.

    python benchmarks/ppo_iteration.py --size tiny --batch 16 --micro-batch 8 --rollout-batch 16
    python benchmarks/ppo_iteration.py --size gpt2 --batch 64 --micro-batch 16 --rollout-batch 64 \
        --response-length 16 --iterations 5 --out runs/ppo-gpt2.json
    python benchmarks/ppo_iteration.py --size tiny --prepare-only runs/ppo-bench   # assets for `vlm-rlhf ppo`

Both sides run the same GPT-2 config (`--size tiny`: the test preset; `--size gpt2`: GPT-2 small, 12x768, with a
CLIP ViT-B/32 vision config at 224 px), random weights, no download:
  * ours: `ppo.train.build_trainer` from a saved policy, a reward model (a fresh scalar head on the same VLM, also
    the value model's start) and a synthetic VQA folder, images as cached tower features (or pixels);
  * TRL: `trl.experimental.ppo.PPOTrainer` with an `AutoModelForCausalLM` policy and
    `AutoModelForSequenceClassification` (num_labels=1) value and reward models of the same GPT-2 config, on random
    token prompts exactly as long as ours (image tokens included: the padded width of the timed rollout);
with the same batch, micro-batch / gradient accumulation, rollout forward batch, response length, PPO epochs,
temperature, missing-EOS penalty and stop token (EOS). CUDA runs bf16 mixed precision for both
(ACCELERATE_MIXED_PRECISION=bf16), the CPU fp32.

Each trainer runs in a fresh Python process of its own (TRL's `gc.collect()` calls cost in proportion to the
objects alive in the process) for `--iterations` updates; the first is warm-up, the others are timed (mean). An
iteration is the time between two `on_step_end` callbacks, i.e. one whole pass of the training loop. Its split
comes from timers wrapped around the module functions each loop calls:
  * generation: TRL `batch_generation` and the sampling log-probs taken from its logits; ours
    `generate_responses` (which takes those log-probs itself);
  * scoring (reference, value and reward forwards of the rollout): TRL `forward` without grad, `get_reward` and the
    reference log-probs; ours `forward` outside the update, `scalar_head`, `last_token_score` and the reference
    log-probs;
  * update (the PPO epochs): ours `VLMPPOTrainer.optimise`; TRL from its first forward with grad to the metrics'
    first `gather_for_metrics` (its loop is inline); the policy forwards in there count as update;
  * rest: the iteration less the three, with what could be timed of it (feature fetch, answer decoding, VQA
    accuracy, metrics and logging, TRL's `empty_cache` and `gc.collect` calls).
Each timer synchronises CUDA on entry and exit, so asynchronous work lands in the phase that queued it.

By default the trainer's guard rails (log-prob ratio, negative KL, answer collapse) are off: a random policy is not
what they are for, and a fired guard would end the run being timed. The first-minibatch ratio deviation the
ratio guard reads is reported either way (`--keep-guards` leaves the configured tolerances in place).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path

import torch

TINY_TEST_PRESET = dict(corpus_scenes=400, text_layers=2, vision_layers=2)  # tests/conftest.py's TEST_PRESET
VIT_B32 = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=32
)
GPT2_SMALL = dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024)
GPT2_VOCAB = 50257  # GPT-2's vocabulary; `<image>` and `<pad>` come on top
MAIN_PHASES = ("generation", "scoring", "update")
REST_PHASES = ("feature fetch", "decode answers", "VQA accuracy", "metrics + log", "empty_cache", "gc.collect")


def on_cuda() -> bool:
    return torch.cuda.is_available()


def sync() -> None:
    if on_cuda():
        torch.cuda.synchronize()


# ----- assets ---------------------------------------------------------------------------------------------------
def gpt2_sized_tokenizer(seed: int):
    """A byte-level BPE trained on the synthetic corpus, its vocabulary filled up to GPT-2's 50257 entries (tokens
    no merge produces: they only make the embedding, the LM head and the sampling as wide as GPT-2's)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from vlm.presets import EOS_TOKEN, TinyPreset, train_tiny_tokenizer

    base = train_tiny_tokenizer(TinyPreset(corpus_scenes=400, vocab_size=4096, seed=seed))
    spec = json.loads(base.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    for i in range(GPT2_VOCAB - len(base)):
        vocab[f"<unused{i}>"] = len(vocab)
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=GPT2_SMALL["n_positions"],
    )


def build_policy(size: str, seed: int):
    from transformers import CLIPVisionConfig, CLIPVisionModel, GPT2Config, GPT2LMHeadModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from vlm.builder import build_vlm
    from vlm.presets import TinyPreset, build_tiny_vlm

    torch.manual_seed(seed)
    if size == "tiny":
        preset = TinyPreset(**TINY_TEST_PRESET, seed=seed)
        model, processor = build_tiny_vlm(preset)
        return model, processor, preset.image_size
    tokenizer = gpt2_sized_tokenizer(seed)
    vision = CLIPVisionModel(CLIPVisionConfig(**VIT_B32))
    lm = GPT2LMHeadModel(
        GPT2Config(
            **GPT2_SMALL,
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    px = VIT_B32["image_size"]
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": px}, crop_size={"height": px, "width": px})
    heads = VIT_B32["num_attention_heads"]
    model, processor = build_vlm(vision, lm, tokenizer, image_processor, projector_num_heads=heads)
    return model, processor, px


def prepare_assets(size: str, work: Path, prompts: int, seed: int) -> dict:
    """Policy, reward model (a new scalar head on the same VLM) and a synthetic VQA folder, under `work`."""
    from vlm.builder import save_vlm
    from vlm.data.synthetic import SynthConfig, write_synthetic_dataset
    from vlm.modeling_vlm import VLMForSequenceClassification

    policy, processor, image_size = build_policy(size, seed)
    paths = {"policy": work / "policy", "reward": work / "reward", "data": work / "data"}
    save_vlm(policy, processor, paths["policy"])
    del policy
    reward = VLMForSequenceClassification.from_pretrained(paths["policy"])
    save_vlm(reward, processor, paths["reward"])
    del reward
    images = max(2, math.ceil(prompts / 5))  # the generator writes 5 questions per image
    write_synthetic_dataset(SynthConfig(out=str(paths["data"]), train=images, val=2, seed=seed, image_size=image_size))
    return paths


# ----- timing ---------------------------------------------------------------------------------------------------
class PhaseClock:
    """Seconds per phase, per iteration. One phase at a time: a timed call made inside another phase's call (or
    inside the update window) counts to that outer phase."""

    def __init__(self):
        self.active: str | None = None
        self.window_start = 0.0
        self.totals: dict[str, float] = defaultdict(float)
        self.iterations: list[dict] = []
        self.last_mark: float | None = None
        self.notes: dict = defaultdict(list)

    def wrap(self, fn, phase: str, synchronise: bool = True, when=None, note=None):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self.active is not None or (when is not None and not when()):
                return fn(*args, **kwargs)
            if synchronise:
                sync()
            self.active, start = phase, time.perf_counter()
            try:
                out = fn(*args, **kwargs)
                if synchronise:
                    sync()
            finally:
                self.totals[phase] += time.perf_counter() - start
                self.active = None
            if note is not None:
                note(self, out)
            return out

        return timed

    def begin_window(self, phase: str) -> None:
        sync()
        self.active, self.window_start = phase, time.perf_counter()

    def end_window(self) -> None:
        sync()
        self.totals[self.active] += time.perf_counter() - self.window_start
        self.active = None

    def mark(self) -> None:
        """Iteration boundary: close the running iteration (if one is open) and open the next."""
        sync()
        now = time.perf_counter()
        if self.last_mark is not None:
            record = {"iteration": now - self.last_mark, **{k: self.totals.get(k, 0.0) for k in MAIN_PHASES}}
            record["rest"] = record["iteration"] - sum(record[k] for k in MAIN_PHASES)
            for key in REST_PHASES:
                if key in self.totals:
                    record[key] = self.totals[key]
            record["other"] = record["rest"] - sum(record.get(k, 0.0) for k in REST_PHASES)
            self.iterations.append(record)
        self.totals = defaultdict(float)
        self.last_mark = now


def timing_callback(clock: PhaseClock):
    from transformers import TrainerCallback

    class IterationClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.mark()

        def on_step_end(self, args, state, control, **kwargs):
            clock.mark()

    return IterationClock()


@contextlib.contextmanager
def patched(*patches):
    """(owner, attribute, replacement) triples, restored on exit."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def quiet(trainer) -> None:
    """Drop the progress bar / log printer (both trainers alike): the figures are printed at the end."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(cb)


def summarise(clock: PhaseClock, warmup: int = 1) -> dict:
    timed = clock.iterations[warmup:] or clock.iterations
    keys = sorted({k for it in timed for k in it})
    return {
        "mean": {k: sum(it.get(k, 0.0) for it in timed) / len(timed) for k in keys},
        "iterations": clock.iterations,
        "timed_iterations": len(timed),
    }


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


# ----- ours -----------------------------------------------------------------------------------------------------
def asset_paths(work: Path) -> dict:
    root = work / "assets"
    return {"policy": root / "policy", "reward": root / "reward", "data": root / "data"}


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

    original_ratio_problem = ours.ratio_problem
    trainer.optimise = clock.wrap(trainer.optimise, "update")
    trainer.metrics = clock.wrap(trainer.metrics, "metrics + log")
    trainer.log = clock.wrap(trainer.log, "metrics + log")
    trainer.store.inputs = clock.wrap(trainer.store.inputs, "feature fetch")
    with patched(
        (ours, "generate_responses", clock.wrap(ours.generate_responses, "generation", note=record_shape)),
        (ours, "forward", clock.wrap(ours.forward, "scoring", when=in_rollout)),
        (ours, "scalar_head", clock.wrap(ours.scalar_head, "scoring")),
        (ours, "last_token_score", clock.wrap(ours.last_token_score, "scoring")),
        # in the rollout: the reference log-probs (in the update it runs inside `optimise`, timed there)
        (ours, "selective_log_softmax", clock.wrap(ours.selective_log_softmax, "scoring", when=in_rollout)),
        (ours, "decode_answers", clock.wrap(ours.decode_answers, "decode answers")),
        (ours, "vqa_accuracy", clock.wrap(ours.vqa_accuracy, "VQA accuracy", synchronise=False)),
        (ours, "ratio_problem", record_deviation),
    ):
        trainer.train()
    info.update(clock.notes)
    info["log"] = [h for h in trainer.state.log_history if "objective/kl" in h]
    info["text_config"] = trainer.policy().config.text_config.to_dict()
    return {**summarise(clock), "info": info}


# ----- TRL ------------------------------------------------------------------------------------------------------
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

    original_forward, original_log_softmax = theirs.forward, theirs.selective_log_softmax
    scoring_forward = clock.wrap(original_forward, "scoring")
    generation_log_softmax = clock.wrap(original_log_softmax, "generation")
    scoring_log_softmax = clock.wrap(original_log_softmax, "scoring")
    original_gather = trainer.accelerator.gather_for_metrics
    trainer.accelerator.gather_for_metrics = gather_for_metrics
    trainer.log = clock.wrap(trainer.log, "metrics + log")
    with patched(
        (theirs, "batch_generation", clock.wrap(theirs.batch_generation, "generation", note=record_generation)),
        (theirs, "forward", timed_forward),
        (theirs, "selective_log_softmax", timed_log_softmax),
        (theirs, "get_reward", clock.wrap(theirs.get_reward, "scoring")),
        (theirs, "empty_cache", clock.wrap(theirs.empty_cache, "empty_cache")),
        (theirs, "gc", types.SimpleNamespace(collect=clock.wrap(gc.collect, "gc.collect"))),
    ):
        trainer.train()
    info = dict(clock.notes)
    info["log"] = [h for h in trainer.state.log_history if "objective/kl" in h]
    info["python_objects"] = len(gc.get_objects())  # what each gc.collect() walks
    return {**summarise(clock), "info": info}


# ----- report ---------------------------------------------------------------------------------------------------
def table(trl: dict, mine: dict, ppo_epochs: int) -> list[str]:
    names = {
        "generation": "generation",
        "scoring": "scoring (ref + value + reward)",
        "update": f"update ({ppo_epochs} PPO epochs)",
        "rest": "rest",
        "feature fetch": "  feature fetch",
        "decode answers": "  decode answers",
        "VQA accuracy": "  VQA accuracy",
        "metrics + log": "  metrics + log",
        "empty_cache": "  empty_cache",
        "gc.collect": "  gc.collect",
        "other": "  other (untimed)",
        "iteration": "iteration",
    }

    def fmt(v):
        return f"{v:.4f}" if v is not None else "-"

    lines = [f"{'phase':<32}{'TRL s':>10}{'ours s':>10}{'ours/TRL':>10}"]
    for key, label in names.items():
        a, b = trl.get(key), mine.get(key)
        if a is None and b is None:
            continue
        ratio = f"{b / a:.2f}x" if a is not None and b is not None and a > 1e-4 else "-"
        lines.append(f"{label:<32}{fmt(a):>10}{fmt(b):>10}{ratio:>10}")
    return lines


PASSED = ("size", "batch", "micro_batch", "rollout_batch", "response_length", "ppo_epochs", "temperature",
          "missing_eos_penalty", "iterations", "vision_inputs", "seed")  # fmt: skip


def run_side(args, side: str, work: Path, prompt_length: int | None = None) -> dict:
    """One trainer in a fresh process; its figures come back through a JSON file."""
    out = work / f"{side}.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--work", str(work)]
    for name in PASSED:
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.keep_guards:
        argv.append("--keep-guards")
    if prompt_length is not None:
        argv += ["--prompt-length", str(prompt_length)]
    subprocess.run(argv, check=True)
    return json.loads(out.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "gpt2"), default="tiny")
    parser.add_argument("--batch", type=int, default=16, help="rollouts per update (one process)")
    parser.add_argument("--micro-batch", type=int, default=8, help="per_device_train_batch_size; the rest accumulates")
    parser.add_argument("--rollout-batch", type=int, default=16, help="local_rollout_forward_batch_size")
    parser.add_argument("--response-length", type=int, default=8)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--missing-eos-penalty", type=float, default=1.0)
    parser.add_argument("--iterations", type=int, default=2, help="updates per trainer; the first is warm-up")
    parser.add_argument("--vision-inputs", choices=("features", "pixels"), default="features")
    parser.add_argument("--keep-guards", action="store_true", help="leave the trainer's guard rails on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="folder for the models and data (default: a temporary one)")
    parser.add_argument(
        "--prepare-only",
        default=None,
        metavar="DIR",
        help="write policy, reward model and data to DIR, print a `vlm-rlhf ppo` command, stop",
    )
    parser.add_argument("--out", "--json", dest="out", default=None, help="also write the figures here (JSON)")
    parser.add_argument("--side", choices=("ours", "trl"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prompt-length", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch % args.micro_batch:
        parser.error("--batch must be a multiple of --micro-batch")
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")

    import vlm  # noqa: F401  (registers the Auto classes)

    if args.prepare_only:
        root = Path(args.prepare_only)
        paths = prepare_assets(args.size, root, args.batch, args.seed)
        print(
            f"vlm-rlhf ppo --sft_model_path {paths['policy']} --reward_model_path {paths['reward']} "
            f"--data_dir {paths['data']} --vision_feature_cache {root / 'feature-cache'} "
            f"--output_dir {root / 'ppo'} --total_episodes {args.iterations * args.batch} "
            f"--per_device_train_batch_size {args.micro_batch} "
            f"--gradient_accumulation_steps {args.batch // args.micro_batch} "
            f"--local_rollout_forward_batch_size {args.rollout_batch} --response_length {args.response_length} "
            f"--num_ppo_epochs {args.ppo_epochs} --report_to none --eval_limit 8 --per_device_eval_batch_size 8"
        )
        return

    # TRL's Accelerator reads the launcher's mixed-precision setting only: the same for both trainers.
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if on_cuda() else "no"
    if args.side:  # a child process: one trainer, figures to <work>/<side>.json
        work = Path(args.work)
        result = run_ours(args, work) if args.side == "ours" else run_trl(args, work, args.prompt_length)
        (work / f"{args.side}.json").write_text(json.dumps(result, default=str))
        return

    device = torch.cuda.get_device_name() if on_cuda() else f"cpu ({torch.get_num_threads()} threads)"
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ppo-iteration-"))
    try:
        started = time.perf_counter()
        prepare_assets(args.size, work / "assets", args.batch, args.seed)
        setup_s = time.perf_counter() - started
        mine = run_side(args, "ours", work)
        info = mine.pop("info")
        prompt_length = max(info["prompt_widths"][1:] or info["prompt_widths"])  # the widest timed rollout
        trl = run_side(args, "trl", work, prompt_length)
        trl_info = trl.pop("info")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    text_config = info["text_config"]
    ratio = mine["mean"]["iteration"] / trl["mean"]["iteration"]
    # TRL empties the CUDA cache and runs gc.collect() several times per update; ours does neither.
    trl_housekeeping = trl["mean"].get("empty_cache", 0.0) + trl["mean"].get("gc.collect", 0.0)
    ratio_without = mine["mean"]["iteration"] / (trl["mean"]["iteration"] - trl_housekeeping)
    report = {
        "device": device,
        "precision": "bf16 mixed" if on_cuda() else "fp32",
        "torch": torch.__version__,
        "size": args.size,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work", "prepare_only", "side")},
        "text_model": {k: text_config.get(k) for k in ("n_layer", "n_embd", "n_head", "vocab_size")},
        "image_tokens": info["image_tokens"],
        "prompt_length": prompt_length,
        "setup_s": setup_s,
        "trl": {**trl, "info": trl_info},
        "ours": {**mine, "info": info},
        "iteration_ratio": ratio,
        "iteration_ratio_without_trl_empty_cache_gc": ratio_without,
        "target_ratio": 1.2,
        "target_met": ratio <= 1.2,
    }
    print(
        f"{args.size}: {device}, {report['precision']}; GPT-2 {text_config['n_layer']}x{text_config['n_embd']}, "
        f"vocab {text_config['vocab_size']}; prompt {prompt_length} tokens ({info['image_tokens']} image) + "
        f"{args.response_length} response; batch {args.batch} = {args.micro_batch} x "
        f"{args.batch // args.micro_batch} accumulated, rollout forward batch {args.rollout_batch}, "
        f"{args.ppo_epochs} PPO epochs; images as {args.vision_inputs}"
    )
    print(
        f"query+response shape of the generated batches: TRL {trl_info.get('query_response_shape')}, "
        f"ours {info.get('query_response_shape')}"
    )
    print(f"mean of {mine['timed_iterations']} timed iteration(s) after 1 warm-up, each trainer in its own process:")
    for line in table(trl["mean"], mine["mean"], args.ppo_epochs):
        print(line)
    deviation = info.get("first_minibatch_ratio_deviation")
    if deviation:
        print(
            f"ours: first-minibatch |ratio - 1| per update (the ratio guard's reading): "
            f"{', '.join(f'{d:.3g}' for d in deviation)}"
        )
    print(
        f"ours / TRL per iteration: {ratio:.2f}x (target <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'}); "
        f"against TRL without its empty_cache + gc.collect: {ratio_without:.2f}x"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2, default=str)


if __name__ == "__main__":
    main()
