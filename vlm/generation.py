"""Answer VQA questions with a VLM: batched, left-padded, KV-cached generation; answers cut at EOS or newline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from vlm.processing_vlm import IMAGE_TOKEN


def vqa_prompt(question: str) -> str:
    """The prompt every stage uses: `Q: <image> {question} A:` (the processor expands `<image>` to N tokens)."""
    return f"Q: {IMAGE_TOKEN} {question.strip()} A:"


def _cut(token_ids: list[int], eos_id: int | None, pad_id: int | None) -> list[int]:
    out = []
    for t in token_ids:
        if t == eos_id or t == pad_id:
            break
        out.append(t)
    return out


@torch.no_grad()
def generate_answers(
    model,
    processor,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    max_new_tokens: int = 16,
    batch_size: int = 32,
    **generate_kwargs,
) -> list[str]:
    """One answer per (image, question); greedy unless `generate_kwargs` say otherwise."""
    if len(images) != len(questions):
        raise ValueError(f"got {len(images)} images for {len(questions)} questions")
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    generate_kwargs.setdefault("do_sample", False)
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        prompts = [vqa_prompt(q) for q in questions[start : start + batch_size]]
        inputs = processor(
            images=list(images[start : start + batch_size]), text=prompts, padding=True, return_tensors="pt"
        )
        inputs = inputs.to(model.device)
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **generate_kwargs,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        for ids in new_tokens:
            text = tokenizer.decode(_cut(ids, tokenizer.eos_token_id, tokenizer.pad_token_id), skip_special_tokens=True)
            answers.append(text.split("\n")[0].strip())
    return answers


@torch.no_grad()
def greedy_without_cache(model, input_ids, attention_mask, pixel_values, max_new_tokens: int) -> torch.Tensor:
    """Reference greedy decoding that re-runs vision and the whole sequence for every new token (no KV cache).

    Slow on purpose: the yardstick that cached `generate` must match token for token, and is timed against.
    """
    ids, mask = input_ids, attention_mask
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values, use_cache=False).logits
        next_token = logits[:, -1].argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, next_token], 1), torch.cat([mask, torch.ones_like(next_token)], 1)
    return ids
