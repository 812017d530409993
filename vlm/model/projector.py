"""The projector from CLIP hidden states to the language model's embedding space."""

from __future__ import annotations

import torch
from torch import nn

from vlm.model.configuration_vlm import VLMConfig


class VLMProjector(nn.Module):
    """LayerNorm -> one transformer encoder layer -> Linear to the LM width.

    The encoder layer lets image tokens exchange information before they are added onto the text embeddings;
    the final Linear maps CLIP width to LM width.
    """

    def __init__(self, config: VLMConfig):
        super().__init__()
        d_vision = config.vision_config.hidden_size
        d_text = config.text_config.hidden_size
        self.norm = nn.LayerNorm(d_vision)
        self.encoder = nn.TransformerEncoderLayer(
            d_model=d_vision,
            nhead=config.projector_num_heads,
            dim_feedforward=config.projector_intermediate_size,
            dropout=config.projector_dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.out = nn.Linear(d_vision, d_text)

    def forward(self, vision_features: torch.Tensor) -> torch.Tensor:
        # [num_images, num_image_tokens, D_vision] -> [num_images, num_image_tokens, D_text]
        return self.out(self.encoder(self.norm(vision_features)))
