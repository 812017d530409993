"""KL from a reference policy on given answers: used by `eval --reference` and PPO's held-out evaluation.

For each answer, the exact KL(policy || reference) of the next-token distributions is summed over the answer's
tokens and its EOS (full vocabulary, not a one-sample estimate), so it is >= 0 and comparable across checkpoints
whatever decoding produced the answers.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from vlm.model.generation import vqa_prompt
from vlm.model.reward_scoring import reward_inputs


def _answer_mask(processor, images, questions, inputs) -> torch.Tensor:
    """[B, T] True at the answer + EOS positions of right-padded `reward_inputs`."""
    prompts = processor(images=[[im] for im in images], text=[vqa_prompt(q) for q in questions], padding=False)
    prompt_len = torch.tensor([len(ids) for ids in prompts["input_ids"]]).unsqueeze(1)
    positions = torch.arange(inputs["input_ids"].shape[1]).unsqueeze(0)
    return (positions >= prompt_len) & inputs["attention_mask"].bool().cpu()


@torch.no_grad()
def answer_kl(model, reference, processor, images, questions, answers, batch_size: int = 32, reference_context=None):
    """Per-answer KL(model || reference), float32 on the CPU. `reference` may be `model` itself with a
    `reference_context` (e.g. a PEFT model's `disable_adapter()`) that turns it into the reference."""
    out = []
    for start in range(0, len(answers), batch_size):
        end = start + batch_size
        imgs, qs = images[start:end], questions[start:end]
        inputs = reward_inputs(processor, imgs, qs, answers[start:end])
        mask = _answer_mask(processor, imgs, qs, inputs)[:, 1:]  # predicted tokens: position t from t - 1
        inputs = inputs.to(model.device)
        logp = F.log_softmax(model(**inputs).logits[:, :-1].float(), -1)
        with reference_context() if reference_context else nullcontext():
            logr = F.log_softmax(reference(**inputs).logits[:, :-1].float(), -1)
        kl = (logp.exp() * (logp - logr)).sum(-1).cpu()  # [B, T-1]
        out.append((kl * mask).sum(-1))
    return torch.cat(out) if out else torch.zeros(0)
