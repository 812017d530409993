"""The embedded default: a tiny VLM built entirely in code (no download), saved through the same builder."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import CLIPVisionConfig, CLIPVisionModel, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from vlm.builder import build_vlm
from vlm.chat_template import LLAVA_SYSTEM
from vlm.data.scenes import sample_scene
from vlm.data.synthetic_qa import conversation, sample_questions
from vlm.tower_pretraining import pretrain_vision_tower

EOS_TOKEN = "<|endoftext|>"


@dataclass
class TinyPreset:
    """Sizes of the embedded default (about 1.7M parameters at these values)."""

    image_size: int = 64
    patch_size: int = 16  # 64 px / 16 -> 16 patches + CLS = 17 image tokens
    vision_hidden_size: int = 128
    vision_layers: int = 3
    vision_heads: int = 4
    text_hidden_size: int = 128
    text_layers: int = 4
    text_heads: int = 4
    max_positions: int = 512
    vocab_size: int = 1024
    corpus_scenes: int = 3000
    seed: int = 0
    # Pre-train the vision tower in code (CLIP's contrastive loss on scene descriptions; vlm/tower_pretraining.py).
    # 0 keeps it random.
    vision_pretrain_steps: int = 0
    vision_pretrain_batch_size: int = 128
    vision_pretrain_learning_rate: float = 2e-3

    def vision_config_kwargs(self) -> dict:
        """`CLIPVisionConfig` arguments of this preset's tower (the builder and the benchmark share them)."""
        return dict(
            hidden_size=self.vision_hidden_size,
            intermediate_size=4 * self.vision_hidden_size,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
        )


def synthetic_corpus(n_scenes: int, seed: int) -> list[str]:
    """Text the tiny tokenizer is trained on: the questions, answers and conversations the generator writes."""
    rng = random.Random(f"corpus-{seed}")
    texts = [LLAVA_SYSTEM, "USER: ASSISTANT: Answer the question using a single word or phrase."]
    for _ in range(n_scenes):
        scene = sample_scene(rng)
        questions = sample_questions(scene, rng, per_image=5)
        texts += [f"Q: {q.question} A: {q.answer}" for q in questions]
        texts += [m["value"].replace("<image>", "") for m in conversation(scene, questions, rng)]
    return texts


def train_tiny_tokenizer(preset: TinyPreset) -> PreTrainedTokenizerFast:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        synthetic_corpus(preset.corpus_scenes, preset.seed),
        vocab_size=preset.vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        show_progress=False,
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=preset.max_positions,
    )


def build_tiny_vlm(preset: TinyPreset | None = None, **config_kwargs):
    """Build the tiny VLM and its processor in code: a CLIP vision tower (random, or pre-trained here with
    `vision_pretrain_steps`), a random GPT-2 and a tokenizer trained on the synthetic corpus."""
    preset = preset or TinyPreset()
    torch.manual_seed(preset.seed)
    tokenizer = train_tiny_tokenizer(preset)
    vision_config = CLIPVisionConfig(**preset.vision_config_kwargs())
    lm = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=preset.max_positions,
            n_embd=preset.text_hidden_size,
            n_layer=preset.text_layers,
            n_head=preset.text_heads,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": preset.image_size},
        crop_size={"height": preset.image_size, "width": preset.image_size},
    )
    if preset.vision_pretrain_steps > 0:
        vision, _ = pretrain_vision_tower(
            vision_config,
            tokenizer,
            image_processor.image_mean,
            image_processor.image_std,
            steps=preset.vision_pretrain_steps,
            batch_size=preset.vision_pretrain_batch_size,
            learning_rate=preset.vision_pretrain_learning_rate,
            seed=preset.seed,
        )
    else:
        vision = CLIPVisionModel(vision_config)
    config_kwargs.setdefault("projector_num_heads", preset.vision_heads)
    return build_vlm(vision, lm, tokenizer, image_processor, **config_kwargs)
