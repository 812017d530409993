"""Image-conditioned versions of the model calls in TRL's PPO loop (trl/experimental/ppo/ppo_trainer.py:
`generate`/`batch_generation`, `forward`; trl/experimental/utils.py: `get_reward`). Each takes `images`, a dict
`{"vision_features": ...}` or `{"pixel_values": ...}` with one row per sequence, and passes it to the model; the
fusion in `VLMModel` adds the features at the first N `<image>` positions of each row.

TRL's helpers are module functions with fixed signatures and no way to pass extra inputs, hence these (trl 1.10 to
1.12; TRL's PPO is removed in 1.13, so they stay as long as the stage follows TRL's PPO loop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import GenerationConfig
from trl.experimental.utils import first_true_indices
from trl.trainer.utils import selective_log_softmax


def slice_images(images: dict, rows) -> dict:
    return {k: v[rows] for k, v in images.items()}


def attention_and_positions(ids: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask = not pad; positions count attended tokens only (left padding), as TRL's `forward` does."""
    mask = ids != pad_id
    return mask, mask.cumsum(1) - mask.long()


@torch.no_grad()
def generate_responses(policy, queries, images, pad_id: int, config: GenerationConfig, chunk: int):
    """Sample responses chunk by chunk. Returns (query_responses [B, ctx + R], logprobs [B, R]); the log-probs are
    those of the sampling distribution (`output_scores` after temperature), as TRL takes them."""
    ctx = queries.shape[1]
    sequences, logprobs = [], []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start : start + chunk]
        out = policy.generate(
            input_ids=q,
            attention_mask=q != pad_id,
            **slice_images(images, slice(start, start + chunk)),
            generation_config=config,
            return_dict_in_generate=True,
            output_scores=True,
        )
        response = out.sequences[:, ctx:]
        logprobs.append(selective_log_softmax(torch.stack(out.scores, 1), response))
        sequences.append(out.sequences)
    # Chunks stop at different lengths once every row has its EOS: right-pad them to one width.
    return _cat_right_padded(sequences, pad_id), _cat_right_padded(logprobs, 0.0)


def _cat_right_padded(chunks: list[torch.Tensor], value) -> torch.Tensor:
    width = max(c.shape[1] for c in chunks)
    return torch.cat([F.pad(c, (0, width - c.shape[1]), value=value) for c in chunks])


def forward(model, query_responses, images, pad_id: int):
    """TRL's `forward` with the image: hidden states on, positions from the mask."""
    mask, positions = attention_and_positions(query_responses, pad_id)
    return model(
        input_ids=query_responses,
        attention_mask=mask,
        position_ids=positions,
        return_dict=True,
        output_hidden_states=True,
        **images,
    )


def scalar_head(model, query_responses, images, pad_id: int) -> torch.Tensor:
    """TRL's `get_reward` path: `model.<base_model_prefix>` then `model.score` on the last hidden state, per
    token: [B, T]. The backbone is `VLMModel`, which owns the fusion, so value and reward see the image."""
    mask, positions = attention_and_positions(query_responses, pad_id)
    backbone = getattr(model, model.base_model_prefix)
    out = backbone(
        input_ids=query_responses,
        attention_mask=mask,
        position_ids=positions,
        output_hidden_states=True,
        use_cache=False,
        **images,
    )
    return model.score(out.hidden_states[-1]).squeeze(-1)


def last_token_score(model, query_responses, images, pad_id: int, context_length: int) -> torch.Tensor:
    """The score at the last response token before padding (the EOS when there is one), as `get_reward` reads it."""
    per_token = scalar_head(model, query_responses, images, pad_id)
    last = first_true_indices(query_responses[:, context_length:] == pad_id) - 1 + context_length
    return per_token[torch.arange(per_token.shape[0], device=per_token.device), last]


def answer_likelihood_score(model, query_responses, images, pad_id: int, eos_id: int, context_length: int):
    """A `VLMForAnswerLikelihood` reward on rollouts: its logit over the response's tokens up to and with the EOS,
    as `vlm.model.reward_scoring.reward_inputs` marks them in training (a row cut without EOS: all its tokens)."""
    mask, positions = attention_and_positions(query_responses, pad_id)
    response = query_responses[:, context_length:]
    length = first_true_indices(response == pad_id)  # tokens before the padding
    steps = torch.arange(response.shape[1], device=response.device)
    in_answer = steps < length[:, None]
    if pad_id == eos_id:  # the EOS reads as padding: count it too
        in_answer |= steps == length[:, None]
    answer_mask = torch.cat([torch.zeros_like(query_responses[:, :context_length]), in_answer.long()], 1)
    out = model(
        input_ids=query_responses, attention_mask=mask, position_ids=positions, answer_mask=answer_mask, **images
    )
    return out.logits[:, 0]


def reward_score(model, query_responses, images, pad_id: int, eos_id: int, context_length: int) -> torch.Tensor:
    """The reward model's score of each rollout, read the way that model was trained to be read."""
    if hasattr(model, "answer_log_likelihood"):  # VLMForAnswerLikelihood (duck-typed: it may come wrapped)
        return answer_likelihood_score(model, query_responses, images, pad_id, eos_id, context_length)
    return last_token_score(model, query_responses, images, pad_id, context_length)
