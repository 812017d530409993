"""The embedded default: a tiny VLM built entirely in code (no download), saved through the same builder."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import CLIPVisionConfig, CLIPVisionModel, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from vlm.model.builder import build_vlm
from vlm.model.chat_template import ASSISTANT_TAG, LLAVA_SYSTEM, USER_TAG
from vlm.synthetic.base_model import load_base
from vlm.synthetic.instruct_mix import KINDS, instruction_turns
from vlm.synthetic.questions import sample_questions
from vlm.synthetic.scenes import sample_scene

EOS_TOKEN = "<|endoftext|>"


@dataclass
class TowerShape:
    """Sizes of the tiny CLIP vision tower (shared by the preset and `vlm-rlhf pretrain-base`)."""

    image_size: int = field(default=64, metadata={"help": "Side of the square input image of the tower, in pixels."})
    # 64 px / 16 -> 16 patches + CLS = 17 image tokens
    patch_size: int = field(default=16, metadata={"help": "Side of a vision patch, in pixels (divides image_size)."})
    vision_hidden_size: int = field(default=128, metadata={"help": "Width of the CLIP vision tower."})
    vision_layers: int = field(default=3, metadata={"help": "Transformer layers of the vision tower."})
    vision_heads: int = field(
        default=4, metadata={"help": "Attention heads of the vision tower (also the projector's encoder layer)."}
    )

    def vision_config(self) -> CLIPVisionConfig:
        return CLIPVisionConfig(
            hidden_size=self.vision_hidden_size,
            intermediate_size=4 * self.vision_hidden_size,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
        )


@dataclass
class TinyShape(TowerShape):
    """Sizes of the embedded default, tower and language side (about 1.7M parameters at these values); shared by
    the preset and `vlm-rlhf pretrain-base`."""

    text_hidden_size: int = field(default=128, metadata={"help": "Width (n_embd) of the GPT-2 language model."})
    text_layers: int = field(default=4, metadata={"help": "Transformer layers (n_layer) of the language model."})
    text_heads: int = field(default=4, metadata={"help": "Attention heads (n_head) of the language model."})
    max_positions: int = field(
        default=512, metadata={"help": "Longest sequence in tokens (n_positions, the tokenizer's model_max_length)."}
    )
    vocab_size: int = field(
        default=1024, metadata={"help": "Tokens of the byte-level BPE tokenizer trained on the synthetic corpus."}
    )
    corpus_scenes: int = field(
        default=3000, metadata={"help": "Synthetic scenes whose questions, answers and texts train the tokenizer."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the tokenizer corpus, the random weights and pretrain-base's scenes."}
    )

    def text_sizes(self) -> dict:
        """The GPT-2 config's names for the language model's sizes."""
        return {
            "n_embd": self.text_hidden_size,
            "n_layer": self.text_layers,
            "n_head": self.text_heads,
            "n_positions": self.max_positions,
        }


@dataclass
class TinyPreset(TinyShape):
    """The embedded default: its sizes, and the pre-trained base it starts from (if any)."""

    base: str | None = field(
        default=None,
        metadata={
            "help": "Pre-trained base (tower, projector, language model, tokenizer): a folder written by "
            "`vlm-rlhf pretrain-base`, or `shipped` for the one in the package (vlm/synthetic/base); none builds "
            "everything random. Its sizes must match the preset's."
        },
    )


def synthetic_corpus(n_scenes: int, seed: int) -> list[str]:
    """Text the tiny tokenizer is trained on: what the demo's model reads, at the rate it reads it. Per scene, the
    stage-1 questions and answers and one instruction item of every kind in the chat template's words (system prompt
    and roles included, so that, as in GPT-2's vocabulary, they are a few tokens each, not one per letter)."""
    rng = random.Random(f"corpus-{seed}")
    texts = []
    for _ in range(n_scenes):
        scene = sample_scene(rng)
        questions = sample_questions(scene, rng, per_image=5)
        texts += [f"Q: {q.question} A: {q.answer}" for q in questions]
        vqa_rows = [{"question": q.question, "multiple_choice_answer": q.answer} for q in questions]
        for kind in KINDS:
            turns = instruction_turns(kind, scene, vqa_rows, rng)
            texts.append(" ".join([LLAVA_SYSTEM, *(f"{USER_TAG} {q} {ASSISTANT_TAG} {a}" for q, a in turns)]))
    return texts


def train_tiny_tokenizer(preset: TinyShape) -> PreTrainedTokenizerFast:
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


def build_tiny_vlm(preset: TinyShape | None = None, vision_tower: CLIPVisionModel | None = None, **config_kwargs):
    """The tiny VLM and its processor: the pre-trained base named by the preset's `base`, or else built in code
    (the given or a random CLIP vision tower, a random GPT-2, a tokenizer trained on the synthetic corpus)."""
    preset = preset or TinyPreset()
    config_kwargs.setdefault("projector_num_heads", preset.vision_heads)
    if getattr(preset, "base", None):
        return load_base(preset.base, preset.vision_config(), preset.text_sizes(), **config_kwargs)
    torch.manual_seed(preset.seed)
    tokenizer = train_tiny_tokenizer(preset)
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
    vision = vision_tower if vision_tower is not None else CLIPVisionModel(preset.vision_config())
    return build_vlm(vision, lm, tokenizer, image_processor, **config_kwargs)
