"""What the reward model reads and how it scores: one text format and one batched scoring function, used by reward
training, `reward score`, and PPO (which scores its rollouts with the same text).

A reward model has one output, a logit of P(correct | image, question, answer): `VLMForAnswerLikelihood` reads it
from the LM's log-likelihood of the answer (the tokens `answer_mask` marks), `VLMForSequenceClassification` from a
head on the last attended token, the EOS after the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import AutoProcessor

from vlm.data.images import load_image
from vlm.model.builder import check_checkpoint, saved_architectures
from vlm.model.generation import vqa_prompt
from vlm.model.modeling_vlm import VLMForAnswerLikelihood, VLMForSequenceClassification
from vlm.training.precision import bf16_available


def reward_text(question: str, answer: str, eos_token: str) -> str:
    """`Q: <image> {question} A: {answer}<eos>`: the SFT format with the answer filled in."""
    return f"{vqa_prompt(question)} {answer.strip()}{eos_token}"


def reward_inputs(processor, images: Sequence[Image.Image | torch.Tensor], questions, answers) -> dict:
    """Model inputs for a batch (right-padded), with `answer_mask`: 1 on the answer's tokens and its EOS, what
    `VLMForAnswerLikelihood` scores. An image may be its cached vision features."""
    tokenizer = processor.tokenizer
    texts = [reward_text(q, a, tokenizer.eos_token) for q, a in zip(questions, answers)]
    tokenizer.padding_side = "right"
    batch = processor(images=[[image] for image in images], text=texts, padding=True, return_tensors="pt")
    # The prompt's length in tokens: its text (with `<image>` expanded as the processor does) is a prefix of the
    # full text, and the answer starts with a space, so the tokenizer splits both alike.
    image_tokens = processor.num_image_tokens - 1  # `<image>` is one token in the text, N after expansion
    prompt_lengths = [len(ids) + image_tokens for ids in tokenizer([vqa_prompt(q) for q in questions])["input_ids"]]
    positions = torch.arange(batch["input_ids"].shape[1])
    ends = batch["attention_mask"].sum(1, keepdim=True)
    batch["answer_mask"] = ((positions >= torch.tensor(prompt_lengths)[:, None]) & (positions < ends)).long()
    return batch


@torch.no_grad()
def score_answers(model, processor, images, questions, answers, batch_size: int = 32) -> torch.Tensor:
    """The reward model's logit for each (image, question, answer), float32 on the CPU; sigmoid gives P(correct)."""
    if not len(images) == len(questions) == len(answers):
        raise ValueError(f"got {len(images)} images, {len(questions)} questions and {len(answers)} answers")
    scores = []
    for start in range(0, len(answers), batch_size):
        end = start + batch_size
        inputs = reward_inputs(processor, images[start:end], questions[start:end], answers[start:end])
        logits = model(**inputs.to(model.device)).logits
        scores.append(logits[:, 0].float().cpu())
    return torch.cat(scores) if scores else torch.zeros(0)


def score_records(model, processor, records: list[dict], name: str, batch_size: int = 32, source: str = "") -> None:
    """Add `reward` (the logit), `p_correct` (its sigmoid) and `reward_model` (`name`) to every answer record, in
    place; a record whose image cannot be read is named (`source`: the file the records come from)."""
    prefix = f"{source}: " if source else ""
    for start in tqdm(range(0, len(records), batch_size), desc="scoring", unit="batch", leave=False):
        batch = records[start : start + batch_size]
        images = [load_image(r["image"], f"{prefix}answer {r['answer_id']}") for r in batch]
        logits = score_answers(model, processor, images, [r["question"] for r in batch], [r["answer"] for r in batch])
        for record, logit in zip(batch, logits.tolist()):
            record.update(reward=logit, p_correct=float(torch.sigmoid(torch.tensor(logit))), reward_model=name)


def reward_model_class(path: str | Path) -> type:
    """The class a reward model checkpoint was saved from."""
    if VLMForAnswerLikelihood.__name__ in saved_architectures(path):
        return VLMForAnswerLikelihood
    return VLMForSequenceClassification


def check_reads_like_policy(processor, policy_processor, path: str | Path, role: str) -> None:
    """Refuse a scorer (`role` at `path`) whose processor would read the policy's token ids or image positions
    otherwise than the policy's does."""
    mine, theirs = policy_processor.tokenizer, processor.tokenizer
    if mine.get_vocab() != theirs.get_vocab():
        raise ValueError(
            f"the {role} {path} has another tokenizer than the policy ({len(theirs)} vs {len(mine)} tokens, or "
            "other ids): it would read the policy's answers as other words; train it from the same SFT checkpoint"
        )
    if (processor.image_token, processor.image_token_id, processor.num_image_tokens) != (
        policy_processor.image_token,
        policy_processor.image_token_id,
        policy_processor.num_image_tokens,
    ):
        raise ValueError(
            f"the {role} {path} marks images as {processor.image_token!r} (id {processor.image_token_id}) x "
            f"{processor.num_image_tokens}, the policy as {policy_processor.image_token!r} (id "
            f"{policy_processor.image_token_id}) x {policy_processor.num_image_tokens}"
        )


def load_scorer(path: str | Path, policy_processor, role: str = "reward model", model_class: type | None = None):
    """A scorer of the policy's rollouts (the RL stages' reward model, or PPO's value model with `model_class`), on
    the CPU in float32, and its processor; a clear error when it would read the policy's token ids or image
    positions otherwise (`check_reads_like_policy`) or has more than one output. The reward model loads as the class
    it was saved from (`reward_model_class`)."""
    check_checkpoint(path, "reward model" if role == "reward model" else None)
    processor = AutoProcessor.from_pretrained(path)
    check_reads_like_policy(processor, policy_processor, path, role)
    model = (model_class or reward_model_class(path)).from_pretrained(path)
    if model.config.num_labels != 1:
        raise ValueError(f"the {role} {path} has {model.config.num_labels} outputs; a scorer of rollouts has one")
    return model, processor


def load_reward_model(path: str | Path, flag: str | None = None):
    """A trained reward model (one output) on the best device, and its processor; a clear error otherwise
    (`flag`: the option that named `path`)."""
    check_checkpoint(path, "reward model", flag)
    dtype = torch.bfloat16 if bf16_available() else None
    model = reward_model_class(path).from_pretrained(path, dtype=dtype)
    if model.config.num_labels != 1:
        raise ValueError(f"{path} has {model.config.num_labels} outputs; a reward model has one")
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return model, AutoProcessor.from_pretrained(path)
