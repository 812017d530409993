"""Chat metrics of a checkpoint, the offline stand-ins for LLaVA's benchmarks (greedy decoding):

- held-out assistant-token perplexity: the answers of held-out LLaVA-Instruct conversations, each in its context,
  through the chat template's assistant mask;
- EOS stop rate and role leaks (`USER:` / `ASSISTANT:` inside a reply) over every reply generated here;
- short-answer compliance: replies of at most 3 words to VQA questions carrying LLaVA-1.5's suffix, and their
  official VQA accuracy;
- detailed descriptions of the synthetic scenes: mean length (words), object recall (scene objects named by their
  colour and shape) and hallucinated-object rate (named objects absent from the scene);
- POPE-style yes/no: "Is there a {colour} {shape} in the image?" for every object of a scene and as many absent
  ones that share its colour or shape (POPE's adversarial negatives); accuracy, F1 of "yes", yes-ratio, asked
  through the chat prompt and, for comparison with checkpoints that never saw it, the `Q: ... A:` prompt;
- three sample dialogues (a description, then a follow-up question).

A checkpoint without a chat template (stage 1, PPO) is rendered with the Vicuna-v1 one, so start and instruct
checkpoints answer the same prompts.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from tqdm.auto import tqdm

from vlm.data.images import load_image
from vlm.data.llava import conversation_messages, load_llava_instruct
from vlm.data.vqa import image_file
from vlm.eval.metrics import normalize_answer
from vlm.model.chat_template import (
    ASSISTANT_TAG,
    USER_TAG,
    assistant_message,
    ensure_chat_template,
    short_answer_question,
    user_message,
)
from vlm.model.generation import answer_chats, answer_questions
from vlm.synthetic.instruct_mix import DETAIL_PROMPTS, mix_file
from vlm.synthetic.scenes import COLORS, SHAPES, Scene, load_scenes

OBJECT_PATTERN = re.compile(rf"\b({'|'.join(COLORS)})\s+({'|'.join(SHAPES)})\b", re.IGNORECASE)
SHORT_ANSWER_WORDS = 3


@dataclass
class ChatEvalSettings:
    chat: bool = field(default=False, metadata={"help": "Also measure chat behaviour (instruction-tuned models)."})
    chat_data: str | None = field(
        default=None,
        metadata={"help": "Held-out LLaVA-Instruct JSON (default: <data>/llava_instruct_mix_<split>.json)."},
    )
    chat_limit: int | None = field(default=200, metadata={"help": "Held-out conversations for the perplexity."})
    chat_scenes: int = field(default=100, metadata={"help": "Scenes described and asked POPE questions."})
    description_tokens: int = field(default=192, metadata={"help": "Longest description generated."})
    short_answer_tokens: int = field(
        default=32, metadata={"help": "Longest reply to a short-answer question (room to show a failure to stop)."}
    )


def assistant_perplexity(model, processor, conversations: Dataset) -> dict:
    """exp(mean NLL) over the answer + EOS tokens of every held-out conversation (the template's assistant mask)."""
    total, tokens = 0.0, 0
    for r in tqdm(conversations, desc="perplexity", unit="conv", leave=False):
        messages = conversation_messages(r["conversations"], bool(r["image_path"]), f"record id {r['id']}")
        if r["image_path"]:
            messages[0]["content"][0]["image"] = load_image(r["image_path"], f"conversation {r['id']}")
        inputs = processor.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
        )
        mask = inputs.pop("assistant_masks").bool()[:, 1:]
        with torch.no_grad():
            logits = model(**inputs.to(model.device)).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), inputs["input_ids"][:, 1:], reduction="none"
        ).cpu()
        total += nll[mask].sum().item()
        tokens += int(mask.sum())
    return {"perplexity": math.exp(total / tokens) if tokens else None, "perplexity_tokens": tokens}


def pope_questions(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """(question, truth): every object, and as many absent objects sharing a colour or a shape with one present."""
    present = {(o.color, o.shape) for o in scene.objects}
    colors, shapes = {c for c, _ in present}, {s for _, s in present}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present and (c in colors or s in shapes)]
    negatives = rng.sample(absent, min(len(present), len(absent)))
    pairs = [(p, "yes") for p in sorted(present)] + [(n, "no") for n in negatives]
    return [(f"Is there a {c} {s} in the image?", truth) for (c, s), truth in pairs]


def yes_no(answer: str) -> str | None:
    words = normalize_answer(answer).split()
    return words[0] if words and words[0] in ("yes", "no") else None


def pope_metrics(answers: list[str], truths: list[str]) -> dict:
    said = [yes_no(a) for a in answers]
    tp = sum(s == "yes" and t == "yes" for s, t in zip(said, truths))
    fp = sum(s == "yes" and t == "no" for s, t in zip(said, truths))
    fn = sum(s != "yes" and t == "yes" for s, t in zip(said, truths))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": sum(s == t for s, t in zip(said, truths)) / len(truths),
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": sum(s == "yes" for s in said) / len(said),
        "unparsed": sum(s is None for s in said),
        "questions": len(truths),
    }


def description_metrics(descriptions: list[str], scenes: list[Scene]) -> dict:
    recalled, objects, named, hallucinated = 0, 0, 0, 0
    for text, scene in zip(descriptions, scenes):
        present = {(o.color, o.shape) for o in scene.objects}
        mentioned = {(c.lower(), s.lower()) for c, s in OBJECT_PATTERN.findall(text)}
        recalled += len(present & mentioned)
        objects += len(present)
        named += len(mentioned)
        hallucinated += len(mentioned - present)
    return {
        "description_words": sum(len(t.split()) for t in descriptions) / len(descriptions),
        "object_recall": recalled / objects if objects else 0.0,
        "hallucinated_objects": hallucinated / named if named else 0.0,
        "objects_named": named,
    }


def _leaks(text: str) -> bool:
    return USER_TAG in text or ASSISTANT_TAG in text


def chat_metrics(model, processor, data_dir: str, split: str, image_dir, questions: Dataset, settings, batch_size: int):
    """Every chat metric of one checkpoint, plus the three sample dialogues and the VQA predictions made through the
    chat prompt (scored by the caller with the official metric)."""
    ensure_chat_template(processor)
    image_dir = image_dir or f"{data_dir}/{split}"
    chat_data = settings.chat_data or mix_file(data_dir, split)
    conversations = load_llava_instruct(chat_data, image_dir, limit=settings.chat_limit)
    out = assistant_perplexity(model, processor, conversations)
    scenes = load_scenes(data_dir, split)
    ids = sorted(scenes)[: settings.chat_scenes]
    images = {i: load_image(image_file(image_dir, split, i), f"scene {i}") for i in ids}
    replies = []  # every chat reply, for the EOS and role-leak rates

    def chat(convs, imgs, max_new_tokens):
        answers = answer_chats(model, processor, convs, imgs, max_new_tokens, batch_size)
        replies.extend(answers)
        return answers

    described = chat(
        [[user_message(DETAIL_PROMPTS[0], True)] for _ in ids], [images[i] for i in ids], settings.description_tokens
    )
    out |= description_metrics([a.text for a in described], [scenes[i] for i in ids])

    rng = random.Random(0)
    pope = [(i, q, t) for i in ids for q, t in pope_questions(scenes[i], rng)]
    pope_images = [images[i] for i, _, _ in pope]
    truths = [t for _, _, t in pope]
    short = settings.short_answer_tokens
    pope_chat = chat([[user_message(short_answer_question(q), True)] for _, q, _ in pope], pope_images, short)
    out["pope"] = pope_metrics([a.text for a in pope_chat], truths)
    pope_qa = answer_questions(model, processor, pope_images, [q for _, q, _ in pope], 8, batch_size)
    out["pope_qa_prompt"] = pope_metrics([a.text for a in pope_qa], truths)

    vqa_images = [load_image(p, f"question_id {q}") for p, q in zip(questions["image_path"], questions["question_id"])]
    vqa_convs = [[user_message(short_answer_question(q), True)] for q in questions["question"]]
    vqa_answers = chat(vqa_convs, vqa_images, short)
    compliant = [a for a in vqa_answers if a.finished and not _leaks(a.text)]
    out["short_answer_compliance"] = sum(len(a.text.split()) <= SHORT_ANSWER_WORDS for a in compliant) / len(
        vqa_answers
    )

    dialogues = []
    for i, answer in zip(ids[:3], described[:3]):
        follow_up = pope_questions(scenes[i], random.Random(i))[-1][0]
        history = [
            user_message(DETAIL_PROMPTS[0], True),
            assistant_message(answer.text),
            user_message(follow_up, False),
        ]
        second = chat([history], [images[i]], short)[0]
        dialogues.append(
            {
                "image": str(image_file(image_dir, split, i)),
                "turns": [[DETAIL_PROMPTS[0], answer.text], [follow_up, second.text]],
            }
        )
    out["eos_stop_rate"] = sum(a.finished for a in replies) / len(replies)
    out["role_leaks"] = sum(_leaks(a.text) for a in replies) / len(replies)
    out["replies"] = len(replies)
    predictions = [
        {"question_id": q, "answer": a.text, "finished": a.finished}
        for q, a in zip(questions["question_id"], vqa_answers)
    ]
    return out, dialogues, predictions
