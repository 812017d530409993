"""Speed of the VLM against its language model alone, and of cached against naive generation.

    python benchmarks/model_speed.py                      # tiny and GPT-2-small-sized, CPU or CUDA
    python benchmarks/model_speed.py --sizes tiny --json runs/bench.json

Prints, per size:
  * training tokens/s (forward + backward + AdamW step) of the VLM running its frozen tower, of the VLM on cached
    vision features (the SFT stage's `cache_vision_features`), and of the same GPT-2 alone on the same number of
    tokens per sequence (the VLM's sequence = image tokens + text), with both VLM / text-only step-time ratios;
  * greedy generation of 32 new tokens with the KV cache versus re-running the whole sequence per token.
Random weights (speed does not depend on them); the vision tower is frozen, as in training.
Ratios are the point: absolute figures move with whatever else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import CLIPVisionConfig, GPT2Config, GPT2LMHeadModel

from vlm import VLMConfig, VLMForCausalLM
from vlm.model.generation import greedy_without_cache
from vlm.synthetic.presets import TinyPreset

_TINY = TinyPreset()  # the shipped demo model's shapes, so the benchmark follows the preset
SIZES = {
    # name: (vision config, GPT-2 config)
    "tiny": (
        _TINY.vision_config().to_dict(),
        dict(
            n_embd=_TINY.text_hidden_size,
            n_layer=_TINY.text_layers,
            n_head=_TINY.text_heads,
            vocab_size=_TINY.vocab_size,
            n_positions=_TINY.max_positions,
            bos_token_id=0,
            eos_token_id=0,
        ),
    ),
    "gpt2-small": (  # CLIP ViT-B/32 shape + GPT-2 small shape
        dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=32,
        ),
        dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50259, n_positions=1024),
    ),
}
IMAGE_TOKEN_ID = 3


def build(size: str, device, dtype):
    vision, text = SIZES[size]
    vision = CLIPVisionConfig(**vision).to_dict()  # a config is enough: VLMForCausalLM builds the tower
    text_model = GPT2LMHeadModel(GPT2Config(**text))
    vlm = VLMForCausalLM(
        VLMConfig(
            vision_config=vision,
            text_config=text_model.config.to_dict(),
            image_token_id=IMAGE_TOKEN_ID,
            projector_num_heads=vision["num_attention_heads"],
        )
    )
    return vlm.to(device, dtype), text_model.to(device, dtype)


def batch(vlm, batch_size: int, text_len: int, device, dtype):
    n = vlm.config.num_image_tokens
    size = vlm.config.vision_config.image_size
    vocab = vlm.config.text_config.vocab_size
    text = torch.randint(10, vocab, (batch_size, text_len), device=device)
    ids = torch.cat([torch.full((batch_size, n), IMAGE_TOKEN_ID, device=device), text], dim=1)
    pixels = torch.randn(batch_size, 3, size, size, device=device, dtype=dtype)
    plain = torch.randint(10, vocab, ids.shape, device=device)  # same token count, text only
    return ids, pixels, plain


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_train(step, steps: int, device) -> float:
    step()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def train_speed(vlm, text_model, ids, pixels, plain, steps, device, autocast_dtype):
    results = {}
    with torch.no_grad():
        features = vlm.model.get_vision_features(pixels)  # what the feature bank stores
    for name, model, kwargs in (
        ("vlm", vlm, dict(input_ids=ids, pixel_values=pixels, labels=ids)),
        ("vlm_cached", vlm, dict(input_ids=ids, vision_features=features, labels=ids)),
        ("text_only", text_model, dict(input_ids=plain, labels=plain)),
    ):
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step(model=model, kwargs=kwargs, opt=opt):
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = model(**kwargs).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        seconds = time_train(step, steps, device)
        results[name] = {"step_s": seconds, "tokens_per_s": ids.numel() / seconds}
    results["vlm_over_text_step_ratio"] = results["vlm"]["step_s"] / results["text_only"]["step_s"]
    results["cached_over_text_step_ratio"] = results["vlm_cached"]["step_s"] / results["text_only"]["step_s"]
    return results


@torch.no_grad()
def generation_speed(vlm, ids, pixels, new_tokens, device):
    vlm.eval()
    mask = torch.ones_like(ids)

    def cached():
        return vlm.generate(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=pixels,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
        )

    def naive():  # re-run vision + the whole sequence for every new token
        return greedy_without_cache(vlm, ids, mask, pixels, new_tokens)

    out = {}
    tokens = {}
    for name, fn in (("cached", cached), ("naive", naive)):
        fn()
        sync(device)
        start = time.perf_counter()
        tokens[name] = fn()
        sync(device)
        out[f"{name}_s"] = time.perf_counter() - start
    out["same_tokens"] = bool(torch.equal(tokens["cached"], tokens["naive"]))
    out["cached_speedup"] = out["naive_s"] / out["cached_s"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,gpt2-small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=48, help="text tokens per sequence (image tokens come on top)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--gen-batch", type=int, default=8)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the training steps")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    report = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__, "sizes": {}}
    for size in args.sizes.split(","):
        vlm, text_model = build(size, device, torch.float32)
        ids, pixels, plain = batch(vlm, args.batch, args.text_len, device, torch.float32)
        train = train_speed(
            vlm, text_model, ids, pixels, plain, args.steps, device, torch.bfloat16 if args.bf16 else None
        )
        gen_ids, gen_pixels, _ = batch(vlm, args.gen_batch, args.text_len, device, torch.float32)
        gen = generation_speed(vlm, gen_ids, gen_pixels, args.new_tokens, device)
        report["sizes"][size] = {
            "seq_len": ids.shape[1],
            "image_tokens": vlm.config.num_image_tokens,
            "train": train,
            "generate": gen,
        }
        print(
            f"{size:>10}: seq {ids.shape[1]} ({vlm.config.num_image_tokens} image) x batch {args.batch} | "
            f"train tok/s VLM {train['vlm']['tokens_per_s']:.0f}, "
            f"GPT-2 alone {train['text_only']['tokens_per_s']:.0f}, "
            f"VLM/text step {train['vlm_over_text_step_ratio']:.2f}x, "
            f"cached features/text step {train['cached_over_text_step_ratio']:.2f}x | "
            f"generate {args.new_tokens} tokens x {args.gen_batch}: "
            f"cached {gen['cached_s']:.2f}s, naive {gen['naive_s']:.2f}s, {gen['cached_speedup']:.1f}x, "
            f"identical tokens: {gen['same_tokens']}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
