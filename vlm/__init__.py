"""vlm-rlhf core: the HF-native CLIP + GPT-2 VLM, its processor, data readers, metrics.

Importing `vlm` registers the model family with transformers' Auto classes, so
`AutoModelForCausalLM.from_pretrained(dir)` and `AutoProcessor.from_pretrained(dir)` resolve our checkpoints.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForSequenceClassification,
    AutoProcessor,
)

from vlm.model.configuration_vlm import VLMConfig
from vlm.model.modeling_vlm import (
    VLMForAnswerLikelihood,
    VLMForCausalLM,
    VLMForSequenceClassification,
    VLMModel,
    VLMPreTrainedModel,
)
from vlm.model.processing_vlm import IMAGE_TOKEN, VLMProcessor

AutoConfig.register(VLMConfig.model_type, VLMConfig, exist_ok=True)
AutoModel.register(VLMConfig, VLMModel, exist_ok=True)
AutoModelForCausalLM.register(VLMConfig, VLMForCausalLM, exist_ok=True)
AutoModelForImageTextToText.register(VLMConfig, VLMForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(VLMConfig, VLMForSequenceClassification, exist_ok=True)
AutoProcessor.register(VLMConfig, VLMProcessor, exist_ok=True)

__all__ = [
    "IMAGE_TOKEN",
    "VLMConfig",
    "VLMForAnswerLikelihood",
    "VLMForCausalLM",
    "VLMForSequenceClassification",
    "VLMModel",
    "VLMPreTrainedModel",
    "VLMProcessor",
]
