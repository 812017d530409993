"""Stage 1: answer-only VQA SFT on TRL's SFTTrainer (labels, cached features, resume, LoRA, freezing, errors).

The exact positions that carry loss for known rows (answer + EOS only; question, image and padding never); the same
loss from cached features and from live vision; an SFT run that lowers the loss, writes `summary.json` and
TensorBoard logs and refuses to overwrite itself; a run killed after its step-3 checkpoint that resumes to the same
step count, the same remaining batches and the same weights as an uninterrupted run; `python -m sft` killed with
SIGKILL while writing checkpoint-4 sets the partial folder aside on the next run and resumes from checkpoint-2;
LLaVA's two steps (only the projector changes, then projector + LM); LoRA (only adapters and the projector train,
the saved model is merged); bad configs get clear errors; the `vlm-rlhf sft` command line (exit code 2, nothing
written, on a missing folder); a real 2-process `accelerate launch -m sft` on CPU (world size 2); sampled human
answers that vary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import TrainerCallback

from sft.config import VQASFTConfig
from sft.data import AttachImages, vqa_sft_rows, with_images
from sft.train import build_trainer, run_training, train
from vlm.cli import main as cli_main
from vlm.data import load_vqa
from vlm.eval.vqa import GenerationSettings, predict, score_predictions
from vlm.model.builder import load_vlm
from vlm.training.feature_bank import build_feature_bank


def sft_config(ckpt, data, out, **overrides) -> VQASFTConfig:
    kwargs = dict(
        init_from=str(ckpt),
        data_dir=str(data),
        output_dir=str(out),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=3e-3,
        max_steps=6,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        eval_limit=16,
        report_to="none",
        seed=0,
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    return VQASFTConfig(**kwargs)


def test_loss_covers_exactly_the_answer_and_eos(tiny_checkpoint, synthetic_data, tmp_path):
    """Known rows carry loss on the answer + EOS only: never on the question, the image or the padding."""
    trainer = build_trainer(sft_config(tiny_checkpoint, synthetic_data, tmp_path / "out"))
    tokenizer = trainer.processing_class.tokenizer
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)
    image_id = trainer.model.config.image_token_id
    for row, ids, mask, labels in zip(rows, batch["input_ids"], batch["attention_mask"], batch["labels"]):
        completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        prompt = tokenizer(row["prompt"].replace("<image>", "<image>" * 17), add_special_tokens=False)["input_ids"]
        real = ids[mask.bool()].tolist()
        assert real == prompt + completion  # prompt, then answer + EOS, padding around them
        start = int(mask.nonzero()[0])
        expected = torch.full_like(labels, -100)
        expected[start + len(prompt) : start + len(prompt) + len(completion)] = torch.tensor(completion)
        assert torch.equal(labels, expected)  # question, image and padding positions never carry loss
        assert completion[-1] == tokenizer.eos_token_id
        assert (labels[ids == image_id] == -100).all() and (ids == image_id).sum() == 17


def test_cached_features_give_the_same_loss_as_live_vision(tiny_checkpoint, synthetic_data, tmp_path):
    model, processor = load_vlm(tiny_checkpoint)
    model.eval()
    eos = processor.tokenizer.eos_token
    rows = vqa_sft_rows(load_vqa(synthetic_data, "train2014", limit=12), eos)
    bank = build_feature_bank(model, processor, list(rows["image_path"]), tmp_path / "cache")
    live = with_images(rows, AttachImages(eos))
    cached = with_images(rows, AttachImages(eos, bank))
    cfg = sft_config(tiny_checkpoint, synthetic_data, tmp_path / "out", cache_vision_features=True)
    collate = build_trainer(cfg).data_collator
    live_batch, cached_batch = collate(list(live)), collate(list(cached))
    assert "pixel_values" in live_batch and "vision_features" in cached_batch
    assert torch.equal(live_batch["input_ids"], cached_batch["input_ids"])
    with torch.no_grad():
        live_loss = model(**live_batch).loss
        cached_loss = model(**cached_batch).loss
    assert live_loss.item() == pytest.approx(cached_loss.item(), abs=1e-5)

    again = build_feature_bank(model, processor, list(rows["image_path"]), tmp_path / "cache")  # from disk
    assert torch.equal(
        again.features(again.rows(rows["image_path"][:3])), bank.features(bank.rows(rows["image_path"][:3]))
    )


def test_sft_learns_and_writes_its_summary(tiny_checkpoint, synthetic_data, tmp_path):
    cfg = sft_config(
        tiny_checkpoint,
        synthetic_data,
        tmp_path / "sft",
        max_steps=20,
        eval_strategy="steps",
        eval_steps=10,
        cache_vision_features=True,
        vision_feature_cache=str(tmp_path / "cache"),
    )
    out = train(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["tokens"] > 0 and summary["tokens_per_second"] > 0
    assert summary["final_loss"] < 0.5 * summary["first_loss"]
    assert summary["data"]["train_questions"] == len(load_vqa(synthetic_data, "train2014"))
    model, processor = load_vlm(out)  # the final model is a plain VLM checkpoint
    assert model.config.freeze_vision
    # the learning curve: held-out VQA accuracy at each evaluation, overall and per question type; its last point
    # is what `vlm-rlhf eval` measures on the final model (same questions, greedy)
    curve = summary["vqa_curve"]
    held_out = load_vqa(synthetic_data, "val2014", limit=16)
    assert [p["step"] for p in curve] == [10, 20]
    assert set(curve[-1]) == {"step", "vqa_accuracy", *held_out["question_type"]}
    scored = score_predictions(predict(model, processor, held_out, GenerationSettings()), held_out)
    assert curve[-1]["vqa_accuracy"] == pytest.approx(scored["accuracy"], abs=1e-4)
    for question_type, accuracy in scored["accuracy_by_question_type"].items():
        assert curve[-1][question_type] == pytest.approx(accuracy, abs=1e-4)
    with pytest.raises(FileExistsError, match="finished SFT run"):
        train(cfg)


class _Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 4:
            raise KeyboardInterrupt("simulated kill after the step-3 checkpoint")


def _recording(trainer):
    seen = []
    collate = trainer.data_collator

    def record(rows):
        seen.append([r["question_id"] for r in rows])
        return collate(rows)

    trainer.data_collator = record
    return seen


def test_interrupted_run_resumes_from_its_last_checkpoint(tiny_checkpoint, synthetic_data, tmp_path):
    """A run killed after its step-3 checkpoint resumes to the same step count, the same remaining batches and the
    same weights as an uninterrupted run."""
    common = dict(max_steps=6, save_strategy="steps", save_steps=3)
    straight = build_trainer(sft_config(tiny_checkpoint, synthetic_data, tmp_path / "a", **common))
    straight_batches = _recording(straight)
    run_training(straight, straight.args)

    cfg = sft_config(tiny_checkpoint, synthetic_data, tmp_path / "b", **common)
    first = build_trainer(cfg)
    first.add_callback(_Interrupt())
    first_batches = _recording(first)
    with pytest.raises(KeyboardInterrupt):
        run_training(first, cfg)
    assert (tmp_path / "b" / "checkpoint-3").is_dir() and not (tmp_path / "b" / "summary.json").exists()

    second = build_trainer(cfg)
    second_batches = _recording(second)
    out = run_training(second, cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["resumed_from"].endswith("checkpoint-3")
    assert first_batches[:3] == straight_batches[:3]
    assert second_batches == straight_batches[3:]  # the resumed run continues the data order, no repeats
    a, _ = load_vlm(tmp_path / "a")
    b, _ = load_vlm(out)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5), name


TINY_SFT_YAML = """\
train_split: train2014
eval_split: null
per_device_train_batch_size: 8
learning_rate: 3.0e-3
max_steps: 4
logging_steps: 1
save_strategy: steps
save_steps: 2
report_to: none
disable_tqdm: true
seed: 0
"""


def test_run_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(
    tiny_checkpoint, synthetic_data, tmp_path
):
    """A real `kill -9` of `python -m sft` while it writes checkpoint-4 (weights and optimizer written, scheduler,
    RNG and trainer state not yet): the same command again sets the partial folder aside (renamed, not deleted, with
    a warning naming it), resumes from the complete checkpoint-2 and finishes; no "missing keys" line on resume."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_SFT_YAML)
    out, marker = tmp_path / "run", tmp_path / "paused"
    command = [sys.executable, "-m", "sft", "--config", str(config), "--init_from", str(tiny_checkpoint)]
    command += ["--data_dir", str(synthetic_data), "--output_dir", str(out)]
    helper = os.path.join(os.path.dirname(__file__), "pause_checkpoint_save")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([helper, os.getcwd()]))
    pausing = dict(env, VLM_TEST_PAUSE_AFTER="checkpoint-4/optimizer.pt", VLM_TEST_PAUSED_MARKER=str(marker))
    first = subprocess.Popen(command, env=pausing, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), f"the run never reached the paused save: {first.stderr.read()[-3000:]}"
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    partial = out / "checkpoint-4"
    assert (partial / "optimizer.pt").is_file() and not (partial / "trainer_state.json").exists()

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["resumed_from"].endswith("checkpoint-2")
    (kept,) = out.glob("partial-checkpoint-4-*")  # set aside whole, nothing deleted
    assert (kept / "optimizer.pt").is_file() and (kept / "model.safetensors").is_file()
    assert (out / "checkpoint-4" / "trainer_state.json").is_file()  # written again, complete, by the resumed run
    assert f"set aside as {kept.name}" in second.stderr
    assert "missing keys" not in second.stderr


def _changed(before, after) -> set[str]:
    return {name.split(".")[1] for name, p in after.named_parameters() if not torch.equal(p, before[name])}


def test_projector_only_step_then_full_step(tiny_checkpoint, synthetic_data, tmp_path):
    """LLaVA's two-step recipe as two configs: projector alone, then projector + LM (vision frozen in both)."""
    init, _ = load_vlm(tiny_checkpoint)
    init_params = {n: p.detach().clone() for n, p in init.named_parameters()}
    step1 = train(sft_config(tiny_checkpoint, synthetic_data, tmp_path / "s1", freeze_language_model=True))
    model1, _ = load_vlm(step1)
    assert _changed(init_params, model1) == {"projector"}
    assert model1.config.freeze_language_model  # saved with the checkpoint

    step2 = train(sft_config(step1, synthetic_data, tmp_path / "s2", freeze_language_model=False))
    model2, _ = load_vlm(step2)
    assert _changed({n: p.detach() for n, p in model1.named_parameters()}, model2) == {"projector", "language_model"}


def test_lora_trains_adapters_and_saves_a_merged_model(tiny_checkpoint, synthetic_data, tmp_path):
    cfg = sft_config(
        tiny_checkpoint,
        synthetic_data,
        tmp_path / "lora",
        max_steps=8,
        learning_rate=1e-2,
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["c_attn"]},
        eval_strategy="steps",
        eval_steps=8,  # the VQA curve answers through the PEFT-wrapped model
    )
    trainer = build_trainer(cfg)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "projector" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    assert any("language_model" in n and "c_attn.lora_A" in n for n in trainable)
    out = run_training(trainer, cfg)
    merged, _ = load_vlm(out)
    init, _ = load_vlm(tiny_checkpoint)
    names = dict(init.named_parameters())
    assert not any("lora" in n for n, _ in merged.named_parameters())
    changed = _changed({n: p.detach() for n, p in names.items()}, merged)
    assert changed == {"projector", "language_model"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trainable_parameters"] < summary["parameters"] / 2
    assert [p["step"] for p in summary["vqa_curve"]] == [8]


def test_bad_configs_get_clear_errors(tiny_checkpoint, synthetic_data, tmp_path):
    with pytest.raises(ValueError, match="unknown lora key"):
        sft_config(tiny_checkpoint, synthetic_data, tmp_path, lora={"rank": 4})
    with pytest.raises(ValueError, match="frozen vision tower"):
        sft_config(tiny_checkpoint, synthetic_data, tmp_path, cache_vision_features=True, freeze_vision=False)
    with pytest.raises(ValueError, match="not a vlm-rlhf checkpoint"):
        build_trainer(sft_config(tmp_path, synthetic_data, tmp_path / "o"))


def _sft_flags(ckpt, data, out, cache, steps: int) -> list[str]:
    """Command-line flags of a short demo-config run on the test checkpoint and data."""
    flags = {
        "--config": "configs/demo/sft.yaml",
        "--init_from": ckpt,
        "--data_dir": data,
        "--output_dir": out,
        "--max_steps": steps,
        "--per_device_train_batch_size": 4,
        "--eval_strategy": "no",
        "--save_strategy": "no",
        "--vision_feature_cache": cache,
        "--disable_tqdm": "true",
    }
    return [str(x) for pair in flags.items() for x in pair]


def test_sft_command_line(tiny_checkpoint, synthetic_data, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["sft", *_sft_flags(tiny_checkpoint, synthetic_data, out, tmp_path / "cache", 3)]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
    assert list(out.glob("runs/*/events.out.tfevents.*"))  # TensorBoard logs
    missing = _sft_flags(tiny_checkpoint, tmp_path / "nowhere", tmp_path / "x", tmp_path / "cache", 3)
    assert cli_main(["sft", *missing]) == 2
    err = capsys.readouterr().err
    assert "vlm-rlhf sft: error:" in err and "nowhere" in err and not (tmp_path / "x").exists()


def test_two_process_accelerate_launch_on_cpu(tiny_checkpoint, synthetic_data, tmp_path):
    """A real `accelerate launch -m sft` with 2 gloo processes: both train one model on disjoint shards."""
    out = tmp_path / "2p"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sft"]
    flags = _sft_flags(tiny_checkpoint, synthetic_data, out, tmp_path / "cache", 4) + ["--report_to", "none"]
    flags += ["--eval_strategy", "steps", "--eval_steps", "2", "--eval_limit", "15"]  # odd: one rank repeats a row
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(launch + flags, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    steps_per_epoch = -(-summary["data"]["train_questions"] // (4 * 2))  # both processes share each epoch
    assert summary["epochs"] == pytest.approx(4 / steps_per_epoch, abs=1e-3)
    assert [p["step"] for p in summary["vqa_curve"]] == [2, 4]  # the ranks' answers gathered at each evaluation
    assert all(0.0 <= p["vqa_accuracy"] <= 1.0 for p in summary["vqa_curve"])


def test_sampled_answers_come_from_the_humans_and_vary(tiny_checkpoint, synthetic_data):
    _, processor = load_vlm(tiny_checkpoint)
    eos = processor.tokenizer.eos_token
    vqa = load_vqa(synthetic_data, "train2014")
    rows = vqa_sft_rows(vqa, eos)
    varied = next(i for i, r in enumerate(rows) if len(r["human_answers"]) > 1)  # 10% human error: some disagree
    sampled = with_images(rows, AttachImages(eos, sample_answers=True, seed=1))
    drawn = {sampled[varied]["completion"] for _ in range(40)}
    assert len(drawn) > 1
    assert drawn <= {f" {a}{eos}" for a in rows[varied]["human_answers"]}
    fixed = with_images(rows, AttachImages(eos))
    assert fixed[varied]["completion"] == f" {vqa[varied]['multiple_choice_answer']}{eos}"
