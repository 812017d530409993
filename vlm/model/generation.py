"""Answer with a VLM: batched, left-padded, KV-cached generation. VQA answers (the `Q: ... A:` prompt) are cut at
EOS or a newline; chat replies (the processor's chat template) run to EOS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from vlm.model.processing_vlm import IMAGE_TOKEN


def vqa_prompt(question: str) -> str:
    """The prompt every stage uses: `Q: <image> {question} A:` (the processor expands `<image>` to N tokens)."""
    return f"Q: {IMAGE_TOKEN} {question.strip()} A:"


@dataclass(frozen=True)
class Answer:
    text: str
    finished: bool  # ended by EOS or a newline; False: cut at max_new_tokens (an over-long answer)


def _decode(token_ids: list[int], tokenizer) -> Answer:
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    kept = []
    for t in token_ids:
        if t in stops:
            break
        kept.append(t)
    text = tokenizer.decode(kept, skip_special_tokens=True)
    finished = len(kept) < len(token_ids) or "\n" in text
    return Answer(text.split("\n")[0].strip(), finished)


@torch.no_grad()
def _generate(model, processor, images, prompts, max_new_tokens: int, **generate_kwargs) -> list[list[int]]:
    """New token ids per prompt: one left-padded, KV-cached `generate` call; a row's image may be None (text-only)."""
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    generate_kwargs.setdefault("do_sample", False)
    batch_images = [[image] if image is not None else [] for image in images]
    inputs = processor(
        images=batch_images if any(batch_images) else None, text=list(prompts), padding=True, return_tensors="pt"
    ).to(model.device)
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **generate_kwargs,
    )
    return output[:, inputs["input_ids"].shape[1] :].tolist()


def answer_questions(
    model,
    processor,
    images: Sequence[Image.Image | torch.Tensor],
    questions: Sequence[str],
    max_new_tokens: int = 16,
    batch_size: int = 32,
    **generate_kwargs,
) -> list[Answer]:
    """One answer per (image, question): batched, left-padded, KV-cached `generate`; greedy unless
    `generate_kwargs` say otherwise. An image may also be its cached vision features (see `VLMProcessor`)."""
    if len(images) != len(questions):
        raise ValueError(f"got {len(images)} images for {len(questions)} questions")
    answers: list[Answer] = []
    for start in range(0, len(questions), batch_size):
        prompts = [vqa_prompt(q) for q in questions[start : start + batch_size]]
        new = _generate(
            model, processor, images[start : start + batch_size], prompts, max_new_tokens, **generate_kwargs
        )
        answers += [_decode(ids, processor.tokenizer) for ids in new]
    return answers


def answer_chats(
    model,
    processor,
    conversations: Sequence[list[dict]],
    images: Sequence[Image.Image | torch.Tensor | None],
    max_new_tokens: int = 64,
    batch_size: int = 32,
    **generate_kwargs,
) -> list[Answer]:
    """The next assistant turn of each conversation, rendered by the processor's chat template (its generation
    prompt ends with ` ASSISTANT:`). The whole text up to EOS is kept, newlines and role tags included, so a
    reply that runs on into a `USER:` turn shows as such; `finished` means it ended with EOS."""
    if len(images) != len(conversations):
        raise ValueError(f"got {len(images)} images for {len(conversations)} conversations")
    tokenizer = processor.tokenizer
    answers: list[Answer] = []
    for start in range(0, len(conversations), batch_size):
        prompts = processor.apply_chat_template(
            list(conversations[start : start + batch_size]), add_generation_prompt=True, tokenize=False
        )
        new = _generate(
            model, processor, images[start : start + batch_size], prompts, max_new_tokens, **generate_kwargs
        )
        for ids in new:
            stop = next((i for i, t in enumerate(ids) if t in (tokenizer.eos_token_id, tokenizer.pad_token_id)), None)
            kept = ids if stop is None else ids[:stop]
            answers.append(Answer(tokenizer.decode(kept, skip_special_tokens=True).strip(), stop is not None))
    return answers


def generate_answers(model, processor, images, questions, max_new_tokens: int = 16, batch_size: int = 32, **kw):
    """`answer_questions`, texts only."""
    return [a.text for a in answer_questions(model, processor, images, questions, max_new_tokens, batch_size, **kw)]


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
