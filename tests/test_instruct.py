"""Stage 5: LLaVA-style instruction tuning (chat template, rows, masks, images in batches, freezing, the command).

The reader turns a fixture (`<image>` at the end of the human turn, three answers, a text-only entry, a leading gpt
turn) into exactly the expected rows, one per conversation, one image part where there is an image and no `<image>`
left in any text, and refuses turns out of order naming the record. The template renders a golden string (and a
system message replacing the default) and survives save -> load. With an image in the first turn,
`return_assistant_tokens_mask=True` marks exactly the answers + EOS, found independently. The collator, over a batch
of whole multi-turn conversations and a text-only one, trains exactly the answers + EOS found independently from
prefix renderings (never system, user, image or padding tokens), every EOS trained, also with pad = EOS. A mixed
batch (3 image rows, 2 text-only) has one `pixel_values` row per image, swapping two rows' images changes the
embeddings exactly at those rows' `<image>` positions, permuting the images changes TRL's chunked loss, and an
all-text batch has no `pixel_values` and a finite loss. One step leaves the vision tower unchanged and changes projector
and LM. Eval's held-out perplexity equals exp(the trainer's eval loss) on the same conversations (1e-3). The mix
holds the kinds, the suffix on every short item, and no image on both sides. `vlm-rlhf instruct` from a PPO
checkpoint and from a stage-1 checkpoint lowers the held-out loss, reloads with the template and stops at EOS on
every reply; a real 2-process `accelerate launch -m sft.instruct` (world size 2) does the same.
`assistant_only_loss: true` (flag or YAML), malformed JSON and a `max_length` nothing fits each give one clear error
and write nothing; a conversation over `max_length` keeps the whole turns that fit, and the answers dropped are
counted. A run killed after its step-2 checkpoint resumes to the same step count with the same start loss; a partial
checkpoint (no RNG, scheduler or trainer state) beside a complete one is set aside on resume. With LoRA only the
adapters and the projector train and the saved (merged) model has the tower of its start. `data instruct-mix`
refuses unknown kinds and data without scenes, and writes one item per scene.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, TrainerCallback

from sft.instruct import build_trainer, train
from sft.instruct_config import InstructConfig
from vlm.cli import main as cli_main
from vlm.data.errors import DataError
from vlm.data.llava import conversation_messages, conversation_rows, load_llava_instruct
from vlm.eval.chat import assistant_perplexity
from vlm.model.builder import load_vlm
from vlm.model.chat_template import (
    LLAVA_SYSTEM,
    SHORT_ANSWER_SUFFIX,
    VICUNA_V1_TEMPLATE,
    assistant_message,
    user_message,
)
from vlm.model.generation import answer_chats
from vlm.synthetic.instruct_mix import InstructMixConfig, mix_file, write_instruct_mix

N_IMAGE = 17  # the test preset's image tokens

FIXTURE = [
    {  # <image> at the end of the first human turn, three answers
        "id": "three",
        "image": "IMAGE",
        "conversations": [
            {"from": "human", "value": "What is in the picture?\n<image>"},
            {"from": "gpt", "value": "A red circle."},
            {"from": "human", "value": "Where is it?"},
            {"from": "gpt", "value": "At the top left."},
            {"from": "human", "value": "How many objects are there?"},
            {"from": "gpt", "value": "There is one."},
        ],
    },
    {  # text-only
        "id": "text",
        "conversations": [
            {"from": "human", "value": "How many corners does a square have?"},
            {"from": "gpt", "value": "A square has four corners."},
        ],
    },
    {  # a leading gpt turn is dropped
        "id": "lead",
        "image": "IMAGE",
        "conversations": [
            {"from": "gpt", "value": "Hello."},
            {"from": "human", "value": "<image>\nDescribe the image."},
            {"from": "gpt", "value": "Two squares."},
        ],
    },
]


@pytest.fixture(scope="module")
def conversations_file(synthetic_data, tmp_path_factory):
    image = sorted((synthetic_data / "train2014").iterdir())[0].name
    items = json.loads(json.dumps(FIXTURE).replace('"IMAGE"', json.dumps(image)))
    path = tmp_path_factory.mktemp("llava") / "conversations.json"
    path.write_text(json.dumps(items))
    return path


@pytest.fixture(scope="module")
def mix(synthetic_data):
    ratios = {"conversation": 0.3, "detail": 0.15, "reasoning": 0.15, "vqa": 0.2, "text": 0.2}  # text items too
    write_instruct_mix(InstructMixConfig(data_dir=str(synthetic_data), ratios=ratios, seed=0))
    return synthetic_data


def instruct_config(ckpt, data, out, **overrides) -> InstructConfig:
    kwargs = dict(
        init_from=str(ckpt),
        train_data=str(mix_file(data, "train2014")),
        train_images=str(data / "train2014"),
        eval_data=str(mix_file(data, "val2014")),
        eval_images=str(data / "val2014"),
        output_dir=str(out),
        max_length=512,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=3e-3,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=0,
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    return InstructConfig(**kwargs)


def test_reader_gives_one_row_per_conversation(conversations_file, synthetic_data):
    conversations = load_llava_instruct(conversations_file, synthetic_data / "train2014")
    rows = conversation_rows(conversations)
    image = conversations[0]["image_path"]

    def user(text, img=False):
        return {
            "role": "user",
            "content": ([{"type": "image", "text": None}] if img else []) + [{"type": "text", "text": text}],
        }

    def bot(text):
        return {"role": "assistant", "content": [{"type": "text", "text": text}]}

    expected = [
        (
            "three",
            image,
            [
                user("What is in the picture?", img=True),
                bot("A red circle."),
                user("Where is it?"),
                bot("At the top left."),
                user("How many objects are there?"),
                bot("There is one."),
            ],
        ),
        ("text", "", [user("How many corners does a square have?"), bot("A square has four corners.")]),
        ("lead", image, [user("Describe the image.", img=True), bot("Two squares.")]),
    ]
    assert [(r["id"], r["image_path"], r["messages"]) for r in rows] == expected
    for r in rows:
        texts = [p["text"] for m in r["messages"] for p in m["content"] if p["type"] == "text"]
        assert not any("<image>" in t for t in texts)
        images = sum(p["type"] == "image" for m in r["messages"] for p in m["content"])
        assert images == (1 if r["image_path"] else 0)


def test_reader_refuses_turns_out_of_order(tmp_path):
    bad = [
        {
            "id": "x",
            "conversations": [
                {"from": "human", "value": "a"},
                {"from": "human", "value": "b"},
                {"from": "gpt", "value": "c"},
            ],
        }
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError) as refused:
        load_llava_instruct(path, tmp_path)
    assert str(refused.value) == f"{path}: record [0] (id x) conversations: turn 1 is 'human' where 'gpt' was expected"


def test_template_renders_llava_v1_and_survives_save_and_load(tiny_vlm, tmp_path):
    _, processor = tiny_vlm
    messages = [
        user_message("What is it?", True),
        assistant_message("A red circle."),
        user_message("Sure?", False),
        assistant_message("Yes."),
    ]
    golden = (
        f"{LLAVA_SYSTEM} USER: <image>\nWhat is it? ASSISTANT: A red circle.<|endoftext|> USER: Sure? "
        "ASSISTANT: Yes.<|endoftext|>"
    )
    assert processor.apply_chat_template(messages, tokenize=False) == golden
    prompt = processor.apply_chat_template(messages[:3], tokenize=False, add_generation_prompt=True)
    assert prompt == golden[: golden.index(" Yes.")] and prompt.endswith(" ASSISTANT:")
    system = [{"role": "system", "content": "Be brief."}, user_message("Hi", False)]
    assert processor.apply_chat_template(system, tokenize=False) == "Be brief. USER: Hi"
    processor.save_pretrained(tmp_path / "p")
    reloaded = AutoProcessor.from_pretrained(tmp_path / "p")
    assert reloaded.chat_template == VICUNA_V1_TEMPLATE
    assert reloaded.apply_chat_template(messages, tokenize=False) == golden


def _full_rendering(processor, messages, image):
    messages = json.loads(json.dumps(messages))
    if image is not None:
        messages[0]["content"][0]["image"] = image
    return processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )


def test_assistant_tokens_mask_marks_exactly_the_answers(tiny_vlm):
    _, processor = tiny_vlm
    tokenizer = processor.tokenizer
    messages = [
        user_message("What is it?", True),
        assistant_message("A red circle."),
        user_message("Sure?", False),
        assistant_message("Yes."),
    ]
    out = _full_rendering(processor, messages, Image.new("RGB", (64, 64), (200, 40, 40)))
    ids, mask = out["input_ids"][0], out["assistant_masks"][0].bool()
    assert (ids == processor.image_token_id).sum() == N_IMAGE and not mask[ids == processor.image_token_id].any()
    # the answers' positions, found independently: each answer's tokens end where its prefix rendering ends
    expected = torch.zeros_like(mask)
    for k in (1, 3):
        before = processor.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=True)
        upto = processor.apply_chat_template(messages[: k + 1], tokenize=False)
        n_before = len(tokenizer(before, add_special_tokens=False)["input_ids"]) + N_IMAGE - 1
        n_upto = len(tokenizer(upto, add_special_tokens=False)["input_ids"]) + N_IMAGE - 1
        expected[n_before:n_upto] = True
    assert torch.equal(mask, expected)
    assert tokenizer.decode(ids[mask]) == " A red circle.<|endoftext|> Yes.<|endoftext|>"


def _answer_positions(processor, messages, with_image: bool) -> torch.Tensor:
    """The answers + EOS of a conversation's full rendering, found without the assistant mask: answer k spans from
    the end of its generation-prompt rendering to the end of the rendering that includes it."""
    tokenizer, extra = processor.tokenizer, (N_IMAGE - 1) * with_image

    def length(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + extra

    total = length(processor.apply_chat_template(messages, tokenize=False))
    mask = torch.zeros(total, dtype=torch.bool)
    for k in range(1, len(messages), 2):
        start = length(processor.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=True))
        mask[start : length(processor.apply_chat_template(messages[: k + 1], tokenize=False))] = True
    return mask


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_collator_trains_exactly_the_answers_of_whole_conversations(tiny_checkpoint, mix, tmp_path, pad_is_eos):
    trainer, facts = build_trainer(instruct_config(tiny_checkpoint, mix, tmp_path / "out"))
    processor = trainer.processing_class
    if pad_is_eos:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    assert len(rows) == facts["train"]["conversations"] and facts["train"]["answers"] > len(rows)
    multi = [r for r in rows if len(r["messages"]) >= 4][:3]
    batch_rows = multi + [r for r in rows if not r["images"]][:1]
    assert len(multi) == 3 and len(batch_rows) == 4, "the mix should hold multi-turn and text-only conversations"
    batch = trainer.data_collator([dict(r) for r in batch_rows])
    for r, ids, attention, labels in zip(batch_rows, batch["input_ids"], batch["attention_mask"], batch["labels"]):
        expected = _answer_positions(processor, r["messages"], bool(r["images"]))
        n = int(attention.sum())
        assert n == len(expected) and not attention[n:].any()
        trained = labels != -100
        assert torch.equal(trained[:n], expected) and not trained[n:].any()  # never padding
        assert torch.equal(labels[trained], ids[trained])
        assert not trained[ids == processor.image_token_id].any()
        eos = (ids == processor.tokenizer.eos_token_id) & attention.bool()
        assert eos.sum() == len(r["messages"]) // 2 and trained[eos].all()  # every answer's EOS, also pad == eos


def _language_model_inputs(model, batch) -> torch.Tensor:
    seen = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    with torch.no_grad():
        model(**batch)
    hook.remove()
    return seen["embeds"]


def test_mixed_and_text_only_batches_put_each_image_at_its_own_row(tiny_checkpoint, mix, tmp_path):
    trainer, _ = build_trainer(instruct_config(tiny_checkpoint, mix, tmp_path / "out"))
    model = trainer.model.eval()
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    with_image = list({r["id"]: r for r in rows if r["images"]}.values())[:3]  # three different images
    text_only = [r for r in rows if not r["images"]][:2]
    assert len(with_image) == 3 and len(text_only) == 2, "the mix should hold text-only items"
    mixed = [with_image[0], text_only[0], with_image[1], with_image[2], text_only[1]]
    batch = trainer.data_collator([dict(r) for r in mixed])
    assert batch["pixel_values"].shape[0] == 3  # one row per image, not per sample
    image_positions = batch["input_ids"] == processor_image_id(trainer)
    assert image_positions.sum(1).tolist() == [N_IMAGE, 0, N_IMAGE, N_IMAGE, 0]
    # Swap the images of rows 0 and 2: embeddings change exactly at their <image> positions, nowhere else.
    swapped = dict(batch, pixel_values=batch["pixel_values"][[1, 0, 2]])
    changed = (_language_model_inputs(model, batch) - _language_model_inputs(model, swapped)).abs().sum(-1) > 1e-6
    expected = image_positions.clone()
    expected[[1, 3, 4]] = False
    assert torch.equal(changed, expected)
    # TRL's default (chunked) loss is computed through the backbone, so it sees the images
    assert trainer.args.loss_type == "chunked_nll"
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        permuted = trainer.compute_loss(model, dict(batch, pixel_values=batch["pixel_values"][[2, 0, 1]]))
    assert abs(loss.item() - permuted.item()) > 1e-4
    text_batch = trainer.data_collator([dict(r) for r in text_only])
    assert "pixel_values" not in text_batch and not (text_batch["input_ids"] == processor_image_id(trainer)).any()
    with torch.no_grad():
        assert torch.isfinite(trainer.compute_loss(model, dict(text_batch)))


def processor_image_id(trainer) -> int:
    return trainer.processing_class.image_token_id


def test_one_step_trains_projector_and_lm_not_the_vision_tower(tiny_checkpoint, mix, tmp_path):
    trainer, _ = build_trainer(instruct_config(tiny_checkpoint, mix, tmp_path / "out", max_steps=1, warmup_steps=0))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())

    def changed(prefix):
        return [n for n in before if n.startswith(prefix) and not torch.equal(before[n], after[n])]

    assert not changed("model.vision_tower.")
    assert changed("model.projector.") and changed("model.language_model.")


def test_held_out_perplexity_equals_the_trainer_eval_loss(tiny_checkpoint, mix, tmp_path):
    """Eval's perplexity (one conversation at a time, assistant mask) and the trainer's eval loss (batches of
    conversations through the collator) count the same tokens."""
    cfg = instruct_config(tiny_checkpoint, mix, tmp_path / "out", eval_limit=6, per_device_eval_batch_size=64)
    trainer, facts = build_trainer(cfg)
    eval_loss = trainer.evaluate()["eval_loss"]
    model, processor = load_vlm(tiny_checkpoint)
    conversations = load_llava_instruct(cfg.eval_data, cfg.eval_images, limit=6)
    measured = assistant_perplexity(model.eval(), processor, conversations)
    assert facts["eval"]["answers"] > 6  # several multi-turn conversations
    assert measured["perplexity"] == pytest.approx(math.exp(eval_loss), rel=1e-3)


def test_instruction_mix_kinds_suffix_and_split_by_scene(mix):
    train = json.loads(mix_file(mix, "train2014").read_text())
    val = json.loads(mix_file(mix, "val2014").read_text())
    kinds = {item["id"].split("-")[0] for item in train + val}
    assert kinds <= {"conversation", "detail", "reasoning", "vqa", "text"} and len(kinds) >= 4
    for item in train + val:
        if item["id"].startswith("vqa-"):
            assert all(
                t["value"].replace("\n<image>", "").endswith(SHORT_ANSWER_SUFFIX)
                for t in item["conversations"]
                if t["from"] == "human"
            )
            assert all(len(t["value"].split()) <= 3 for t in item["conversations"] if t["from"] == "gpt")
    train_images = {i["image"] for i in train if "image" in i}
    val_images = {i["image"] for i in val if "image" in i}
    assert train_images and val_images and not train_images & val_images
    assert all("train2014" in i for i in train_images) and all("val2014" in i for i in val_images)


def test_instruct_command_from_a_ppo_and_a_stage1_checkpoint(tiny_checkpoint, mix, tmp_path, capsys):
    from test_ppo import _config as ppo_config

    from ppo.train import build_trainer as build_ppo
    from ppo.train import run as run_ppo

    ppo_out = run_ppo(build_ppo(ppo_config(tiny_checkpoint, mix, tmp_path / "ppo"), reward_fn=_length_reward))
    (ppo_out / "chat_template.jinja").unlink()  # as checkpoints made before stage 5 existed: no template
    assert load_vlm(ppo_out)[1].chat_template is None
    for name, start in (("from-ppo", ppo_out), ("from-sft", tiny_checkpoint)):
        out = tmp_path / name
        flags = [
            "--config",
            "configs/demo/instruct.yaml",
            "--init_from",
            str(start),
            "--output_dir",
            str(out),
            *_data_flags(mix),
            "--max_steps",
            "40",
            "--learning_rate",
            "3e-3",
            "--per_device_train_batch_size",
            "8",
            "--vision_feature_cache",
            str(tmp_path / "cache"),
            "--eval_limit",
            "4",
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
            "--train_data",
            str(tmp_path / "short.json"),
            "--eval_data",
            str(tmp_path / "short-val.json"),
        ]
        _short_answers(mix, "train2014", tmp_path / "short.json")
        _short_answers(mix, "val2014", tmp_path / "short-val.json")
        assert cli_main(["instruct", *flags]) == 0, capsys.readouterr().err[-2000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["init_from"] == str(start) and summary["steps"] == 40
        assert list(out.glob("runs/*/events.out.tfevents.*"))  # TensorBoard logs
        assert summary["final_eval_loss"] < summary["start_eval_loss"]
        model, processor = load_vlm(out)
        assert processor.chat_template == VICUNA_V1_TEMPLATE
        images = [Image.open(sorted((mix / "val2014").iterdir())[i]).convert("RGB") for i in range(4)]
        replies = answer_chats(
            model.eval(),
            processor,
            [[user_message("What color is the circle?\n" + SHORT_ANSWER_SUFFIX, True)]] * 4,
            images,
            max_new_tokens=12,
        )
        assert all(r.finished for r in replies), replies  # stops at EOS


def _length_reward(rows, answers) -> torch.Tensor:
    return torch.tensor([float(len(a) < 6) for a in answers])


def _data_flags(data) -> list[str]:
    return [
        "--train_images",
        str(data / "train2014"),
        "--eval_data",
        str(mix_file(data, "val2014")),
        "--eval_images",
        str(data / "val2014"),
    ]


def _short_answers(data, split, path):
    """The mix's short-answer items only: enough for a few steps to learn to answer and stop."""
    items = [i for i in json.loads(mix_file(data, split).read_text()) if i["id"].startswith("vqa-")]
    path.write_text(json.dumps(items * 4))


def test_two_process_accelerate_launch(tiny_checkpoint, mix, tmp_path):
    out = tmp_path / "2p"
    _short_answers(mix, "train2014", tmp_path / "short.json")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sft.instruct"]
    flags = [
        "--config",
        "configs/demo/instruct.yaml",
        "--init_from",
        str(tiny_checkpoint),
        "--output_dir",
        str(out),
        "--train_data",
        str(tmp_path / "short.json"),
        *_data_flags(mix),
        "--max_steps",
        "30",
        "--learning_rate",
        "3e-3",
        "--per_device_train_batch_size",
        "4",
        "--vision_feature_cache",
        str(tmp_path / "cache"),
        "--report_to",
        "none",
        "--eval_limit",
        "4",
        "--save_strategy",
        "no",
        "--eval_strategy",
        "no",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(launch + flags, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 30
    model, processor = load_vlm(out)
    assert processor.chat_template == VICUNA_V1_TEMPLATE
    images = [Image.open(sorted((mix / "val2014").iterdir())[i]).convert("RGB") for i in range(4)]
    question = [user_message("How many objects are there?\n" + SHORT_ANSWER_SUFFIX, True)]
    replies = answer_chats(model.eval(), processor, [question] * 4, images, max_new_tokens=12)
    assert all(r.finished for r in replies), replies  # stops at EOS


def test_assistant_only_loss_and_bad_data_are_refused(tiny_checkpoint, mix, tmp_path, capsys):
    base = [
        "--init_from",
        str(tiny_checkpoint),
        "--output_dir",
        str(tmp_path / "x"),
        "--train_data",
        str(mix_file(mix, "train2014")),
        *_data_flags(mix),
    ]
    assert cli_main(["instruct", *base, "--assistant_only_loss", "true"]) == 2
    err = capsys.readouterr().err
    assert "vlm-rlhf instruct: error: assistant_only_loss: true is not supported" in err
    config = tmp_path / "instruct.yaml"
    config.write_text("assistant_only_loss: true\n")
    assert cli_main(["instruct", "--config", str(config), *base]) == 2
    assert "assistant_only_loss" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "a", "conversations": [{"from": "human"')
    assert cli_main(["instruct", *base, "--train_data", str(broken)]) == 2
    assert f"{broken}: malformed JSON" in capsys.readouterr().err
    assert cli_main(["instruct", *base, "--max_length", "20"]) == 2
    assert "no conversation fits max_length 20" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_long_conversations_keep_the_whole_turns_that_fit(
    tiny_checkpoint, conversations_file, synthetic_data, tmp_path
):
    cfg = instruct_config(
        tiny_checkpoint,
        synthetic_data,
        tmp_path / "out",
        train_data=str(conversations_file),
        train_images=str(synthetic_data / "train2014"),
        eval_data=None,
    )
    _, processor = load_vlm(tiny_checkpoint)
    three = conversation_rows(load_llava_instruct(conversations_file, synthetic_data / "train2014"))[0]["messages"]
    ends = [len(_answer_positions(processor, three[:t], True)) for t in (2, 4, 6)]
    cfg.max_length = ends[1]  # the first two answers of "three" fit, its third does not; the others are shorter
    trainer, facts = build_trainer(cfg)
    assert [facts["train"][k] for k in ("conversations", "rows", "answers", "dropped_turns")] == [3, 3, 4, 1]
    kept = trainer.train_dataset[0]
    assert kept["id"] == "three" and kept["messages"] == three[:4]
    labels = trainer.data_collator([dict(kept)])["labels"][0]
    assert len(labels) == ends[1] and (labels != -100).any()
    cfg.max_length = ends[0] - 1  # "three" no longer fits at all
    _, facts = build_trainer(cfg)
    assert facts["train"]["rows"] == 2 and facts["train"]["dropped_turns"] == 3
    assert conversation_messages(FIXTURE[0]["conversations"], True, "x")[0]["content"][0] == {"type": "image"}


class KillAfterFirstCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt("killed after a checkpoint")


def test_interrupted_run_resumes_with_the_same_start(tiny_checkpoint, mix, tmp_path):
    out = tmp_path / "out"
    cfg = instruct_config(tiny_checkpoint, mix, out, max_steps=4, save_strategy="steps", save_steps=2, eval_limit=4)
    built = build_trainer(cfg)
    built[0].add_callback(KillAfterFirstCheckpoint())
    with pytest.raises(KeyboardInterrupt):
        train(cfg, built)
    assert (out / "checkpoint-2").is_dir() and not (out / "summary.json").exists()
    start = json.loads((out / "start_eval.json").read_text())["eval_loss"]
    train(instruct_config(tiny_checkpoint, mix, out, max_steps=4, save_strategy="steps", save_steps=2, eval_limit=4))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 4
    assert summary["start_eval_loss"] == start and summary["final_eval_loss"] < start
    with pytest.raises(FileExistsError, match="already holds a finished instruct run"):
        train(cfg)


def test_partial_checkpoint_beside_a_complete_one_is_set_aside_on_resume(tiny_checkpoint, mix, tmp_path, caplog):
    """Beside a complete checkpoint-1, a checkpoint-2 with everything but its RNG, scheduler and trainer state (a
    run killed while saving it): the next run renames it aside with a warning, resumes from checkpoint-1, finishes."""
    out = tmp_path / "out"
    cfg = instruct_config(tiny_checkpoint, mix, out, max_steps=2, save_strategy="steps", save_steps=1, eval_data=None)
    built = build_trainer(cfg)
    built[0].add_callback(KillAfterFirstCheckpoint())
    with pytest.raises(KeyboardInterrupt):
        train(cfg, built)
    unwritten = ("rng_state.pth", "scheduler.pt", "trainer_state.json")
    shutil.copytree(out / "checkpoint-1", out / "checkpoint-2", ignore=shutil.ignore_patterns(*unwritten))
    with caplog.at_level(logging.WARNING, logger="vlm.training.resume"):
        train(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["resumed_from"].endswith("checkpoint-1")
    (kept,) = out.glob("partial-checkpoint-2-*")
    assert (kept / "optimizer.pt").is_file() and not any((kept / name).exists() for name in unwritten)
    assert f"set aside as {kept.name}" in caplog.text


def test_lora_trains_adapters_and_projector_and_saves_a_merged_model(tiny_checkpoint, mix, tmp_path):
    out = tmp_path / "lora"
    cfg = instruct_config(tiny_checkpoint, mix, out, lora={"r": 4}, warmup_steps=0, eval_limit=4)
    trainer, facts = build_trainer(cfg)
    trained = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or ".projector." in n for n in trained)
    train(cfg, (trainer, facts))
    start, _ = load_vlm(tiny_checkpoint)
    merged, processor = load_vlm(out)  # a plain VLM: the adapter is folded in
    assert processor.chat_template == VICUNA_V1_TEMPLATE
    before, after = start.state_dict(), merged.state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not any(k.startswith("model.vision_tower.") for k in changed)
    assert any(k.startswith("model.language_model.") for k in changed) and any(".projector." in k for k in changed)


def test_instruct_mix_command_and_its_bad_input(mix, tmp_path, capsys):
    assert cli_main(["data", "instruct-mix", "--data_dir", str(mix), "--ratios", '{"chat": 1}']) == 2
    assert "ratios: non-negative fractions over" in capsys.readouterr().err
    assert cli_main(["data", "instruct-mix", "--data_dir", str(tmp_path)]) == 2
    assert "scenes_train2014.json: no scene ground truth" in capsys.readouterr().err
    out = tmp_path / "copy"
    out.mkdir()
    for name in (
        "scenes_val2014.json",
        "v2_OpenEnded_mscoco_val2014_questions.json",
        "v2_mscoco_val2014_annotations.json",
    ):
        (out / name).write_bytes((mix / name).read_bytes())
    (out / "val2014").symlink_to(mix / "val2014")
    argv = ["data", "instruct-mix", "--data_dir", str(out), "--splits", "val2014", "--ratios", '{"vqa": 1}']
    assert cli_main(argv) == 0
    items = json.loads(mix_file(out, "val2014").read_text())
    assert len(items) == 12 and all(i["id"].startswith("vqa-") for i in items)  # one item per val scene
