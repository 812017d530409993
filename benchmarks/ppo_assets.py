"""Assets of the PPO iteration benchmark: a policy, a reward model and a synthetic VQA folder, random weights, no
download (`--size tiny`: the test preset; `--size gpt2`: GPT-2 small, 12x768, with a CLIP ViT-B/32 vision config at
224 px). The reward model is a fresh scalar head on the same VLM, also the value model's start."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

TINY_TEST_PRESET = dict(corpus_scenes=400, text_layers=2, vision_layers=2)  # tests/conftest.py's TEST_PRESET
VIT_B32 = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=32
)
GPT2_SMALL = dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024)
GPT2_VOCAB = 50257  # GPT-2's vocabulary; `<image>` and `<pad>` come on top


def gpt2_sized_tokenizer(seed: int):
    """A byte-level BPE trained on the synthetic corpus, its vocabulary filled up to GPT-2's 50257 entries (tokens
    no merge produces: they only make the embedding, the LM head and the sampling as wide as GPT-2's)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from vlm.synthetic.presets import EOS_TOKEN, TinyPreset, train_tiny_tokenizer

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

    from vlm.model.builder import build_vlm
    from vlm.synthetic.presets import TinyPreset, build_tiny_vlm

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
    from vlm.model.builder import save_vlm
    from vlm.model.modeling_vlm import VLMForSequenceClassification
    from vlm.synthetic.dataset import SynthConfig, write_synthetic_dataset

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


def asset_paths(work: Path) -> dict:
    """Where the benchmark's `prepare_assets(size, work / "assets", ...)` put them."""
    root = work / "assets"
    return {"policy": root / "policy", "reward": root / "reward", "data": root / "data"}
