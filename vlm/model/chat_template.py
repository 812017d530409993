"""The chat template of instruction-tuned checkpoints: LLaVA's Vicuna-v1 conversation shape.

    {system} USER: <image>\n{question} ASSISTANT: {answer}{eos} USER: {question} ASSISTANT:

One `<image>` per `{"type": "image"}` content part (the processor's `replace_image_token` hook expands it to N
tokens); `{% generation %}` marks each answer + EOS, so `apply_chat_template(..., return_assistant_tokens_mask=True)`
returns exactly the trained positions. The generation prompt ends with ` ASSISTANT:` and every answer starts with a
space, so prompt and completion tokenize apart exactly as they do together (a GPT-2 word starts at its space).
"""

from __future__ import annotations

# Inside a template's loop over messages: `text` (the text parts joined) and `n_images` (the image parts) of a
# message whose content is a string or a list of parts.
_TEXT_AND_IMAGES = (
    "{%- if message['content'] is string -%}"
    "{%- set n_images = 0 -%}{%- set text = message['content'] -%}"
    "{%- else -%}"
    "{%- set n_images = message['content'] | selectattr('type', 'equalto', 'image') | list | length -%}"
    "{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}"
    "{%- endif -%}"
)

# llava/conversation.py `conv_vicuna_v1`
LLAVA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
# LLaVA-1.5's suffix for VQA-style items: keeps the short-answer skill through instruction tuning.
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
USER_TAG, ASSISTANT_TAG = "USER:", "ASSISTANT:"

# A message's content is a string or a list of parts ({"type": "image"} | {"type": "text", "text": ...}); a leading
# system message replaces the default system prompt.
VICUNA_V1_TEMPLATE = (
    "{%- set system = '" + LLAVA_SYSTEM.replace("'", "\\'") + "' -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] if messages[0]['content'] is string"
    " else messages[0]['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}"
    "{%- set messages = messages[1:] -%}"
    "{%- endif -%}"
    "{{- system -}}"
    "{%- for message in messages -%}" + _TEXT_AND_IMAGES + "{%- if message['role'] == 'user' -%}"
    "{{- ' USER: ' + '<image>\\n' * n_images + text -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- ' ASSISTANT:' -}}{%- generation -%}{{- ' ' + text + eos_token -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- raise_exception('roles are system, user and assistant; got ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- ' ASSISTANT:' -}}{%- endif -%}"
)


# The VQA prompt of every stage (`vlm.model.generation.vqa_prompt`: `Q: <image> {question} A:`) as a chat template,
# for trainers that take conversations (TRL's GRPOTrainer): a user turn renders exactly as `vqa_prompt` does, an
# assistant turn as the SFT target (` {answer}{eos}`). Only lent to such a trainer, never saved with a checkpoint.
VQA_TEMPLATE = (
    "{%- for message in messages -%}" + _TEXT_AND_IMAGES + "{%- if message['role'] == 'user' -%}"
    "{{- 'Q: ' + '<image> ' * n_images + text | trim + ' A:' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- ' ' + text | trim + eos_token -}}"
    "{%- else -%}"
    "{{- raise_exception('VQA turns are user and assistant; got ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def ensure_chat_template(processor) -> bool:
    """Give a processor without a chat template (a stage-1 or PPO checkpoint) the Vicuna-v1 one. Returns whether
    it was added."""
    if processor.chat_template:
        return False
    processor.chat_template = VICUNA_V1_TEMPLATE
    return True


def user_message(text: str, with_image: bool) -> dict:
    parts = [{"type": "image"}] if with_image else []
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


def assistant_message(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def short_answer_question(question: str) -> str:
    """LLaVA-1.5's VQA instruction: the question, a newline, then the single-word-or-phrase suffix."""
    return f"{question.strip()}\n{SHORT_ANSWER_SUFFIX}"
