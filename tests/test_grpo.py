"""Stage 4 without a critic: TRL's GRPOTrainer on the VLM (`vlm-rlhf grpo`).

The lent processor renders each question as exactly the `Q: <image> {question} A:` ids PPO and SFT use. Images reach
every pass: in a generation batch the rows carry their own image's features, and swapping the images of the rows
changes TRL's log-probs and the loss it trains on (the loss pass reads images only from what TRL carried from the
rollout) and the reward model's scores of the same answers. With a fixed rule as reward (answers starting a-m
score 1), the mean reward of the last 10 of 30 updates beats the first 10 by more than 0.15. A run killed right after
its step-2 checkpoint and resumed with `--resume` ends with the same policy (checksum) as an uninterrupted one, and a
restart without `--resume` is refused. Held-out evaluations at steps 0, 2 and 4 keep the best in `best/` and name
it. The reward sources are set from what is given: the reward model with the VQA accuracy at `ground_truth_weight`
(logged even at 0), or with no reward model VQA accuracy alone. A real 2-process `accelerate launch -m grpo` run
ends with identical policies on both ranks. Bad inputs give one clear error and exit code 2. A run rewarded for ever
shorter answers at a high learning rate stops, naming its last good checkpoint and writing no `summary.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoProcessor, TrainerCallback

from grpo.config import VLMGRPOConfig
from grpo.rewards import RewardModelScore, vqa_accuracy_reward
from grpo.train import build_trainer, run, train
from vlm.cli import main as cli_main
from vlm.model.builder import save_vlm
from vlm.model.generation import vqa_prompt
from vlm.model.modeling_vlm import VLMForSequenceClassification
from vlm.synthetic.presets import TinyPreset, build_tiny_vlm
from vlm.training.guards import TrainingStopped


def _config(tiny_checkpoint, synthetic_data, out, **overrides) -> VLMGRPOConfig:
    settings = dict(
        output_dir=str(out),
        sft_model_path=str(tiny_checkpoint),
        data_dir=str(synthetic_data),
        vision_feature_cache=str(out.parent / "cache"),
        num_generations=4,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        per_device_eval_batch_size=8,
        max_steps=4,
        max_completion_length=4,
        learning_rate=1e-3,
        report_to="none",
        eval_strategy="no",
        save_strategy="no",
        logging_steps=1,
        eval_limit=8,
        seed=0,
    )
    settings.update(overrides)
    return VLMGRPOConfig(**settings)


def favoured_first_letter(completions, **_) -> list[float]:
    """A fixed rule: answers starting with a letter a-m score 1, all others 0."""
    return [1.0 if c[0]["content"].strip()[:1].lower() in set("abcdefghijklm") else 0.0 for c in completions]


def _batch(trainer, n_prompts: int = 4):
    """A generation batch of `n_prompts` questions about different images, each `num_generations` times."""
    first_of_image = {}
    for i, path in enumerate(trainer.train_dataset["image_path"]):
        first_of_image.setdefault(path, i)
    prompts = list(first_of_image.values())[:n_prompts]
    rows = [trainer.train_dataset[i] for i in prompts for _ in range(trainer.num_generations)]
    torch.manual_seed(0)
    return rows, trainer._generate_and_score_completions(rows)


def test_prompts_render_as_the_policy_was_trained(tiny_checkpoint, synthetic_data, tmp_path):
    trainer = build_trainer(_config(tiny_checkpoint, synthetic_data, tmp_path / "out"))
    rows, batch = _batch(trainer, 2)
    processor = trainer.saved_processor
    for row, ids, mask in zip(rows, batch["prompt_ids"], batch["prompt_mask"]):
        expected = processor(images=[[row["image"]]], text=[vqa_prompt(row["question"])])["input_ids"][0]
        assert ids[mask.bool()].tolist() == expected


def test_images_condition_log_probs_loss_and_rewards(
    tiny_checkpoint, synthetic_data, likelihood_reward_checkpoint, tmp_path
):
    cfg = _config(
        tiny_checkpoint, synthetic_data, tmp_path / "out", reward_model_path=str(likelihood_reward_checkpoint)
    )
    trainer = build_trainer(cfg)
    rows, batch = _batch(trainer)
    images = batch["pixel_values"]  # the rows' cached features, carried by TRL from rollout to loss
    assert images.shape[0] == len(rows) and images.dim() == 3
    assert torch.equal(images, torch.stack([r["image"] for r in rows]))
    swapped = images.roll(trainer.num_generations, 0)  # each group gets another question's image
    assert not torch.equal(images, swapped)
    model = trainer.model
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    k = batch["completion_ids"].shape[1]
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            model, ids, mask, k, pixel_values=images, num_images=batch["num_images"]
        )
        logps_swapped, _, _ = trainer._get_per_token_logps_and_entropies(
            model, ids, mask, k, pixel_values=swapped, num_images=batch["num_images"]
        )
        assert not torch.allclose(logps, logps_swapped)

    def loss_gradient(inputs) -> torch.Tensor:
        """The gradient TRL's loss gives the LM head (its value alone is -mean(advantage) at ratio 1)."""
        model.zero_grad()
        trainer.compute_loss(model, inputs).backward()
        return model.lm_head.weight.grad.clone()

    assert not torch.allclose(loss_gradient(batch), loss_gradient({**batch, "pixel_values": swapped}))
    reward = next(f for f in trainer.reward_funcs if isinstance(f, RewardModelScore))
    completions = [[{"role": "assistant", "content": "red"}]] * len(rows)
    questions = [r["question"] for r in rows]
    scores = torch.tensor(reward(completions, [r["image"] for r in rows], questions))
    scores_swapped = torch.tensor(reward(completions, list(swapped), questions))
    assert not torch.allclose(scores, scores_swapped)


def test_reward_sources_follow_what_is_given(tiny_checkpoint, synthetic_data, likelihood_reward_checkpoint, tmp_path):
    oracle = build_trainer(_config(tiny_checkpoint, synthetic_data, tmp_path / "oracle"))
    assert [f.__name__ for f in oracle.reward_funcs] == ["vqa_accuracy"] and oracle.args.reward_weights == [1.0]
    rm = str(likelihood_reward_checkpoint)
    watched = build_trainer(_config(tiny_checkpoint, synthetic_data, tmp_path / "rm", reward_model_path=rm))
    assert [f.__name__ for f in watched.reward_funcs] == ["reward_model", "vqa_accuracy"]
    assert watched.args.reward_weights == [1.0, 0.0]  # the truth logged beside the reward, not rewarded
    watched.train()
    logs = [h for h in watched.state.log_history if "reward" in h]
    assert logs and all("rewards/vqa_accuracy/mean" in h for h in logs)
    assert all(h["reward"] == pytest.approx(h["rewards/reward_model/mean"], abs=1e-5) for h in logs)
    answers = [["red"] * 10, ["two"] * 10]
    assert vqa_accuracy_reward([[{"content": "red"}], [{"content": "three\nmore"}]], answers) == [1.0, 0.0]


def test_a_fixed_rule_reward_is_learned(tiny_checkpoint, synthetic_data, tmp_path):
    cfg = _config(
        tiny_checkpoint, synthetic_data, tmp_path / "out", max_steps=30, learning_rate=1e-2, beta=0.0, temperature=1.0
    )
    trainer = build_trainer(cfg, reward_funcs=[favoured_first_letter])
    run(trainer)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    start, end = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert end > start + 0.15, rewards


class KillAfterFirstCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt("killed after a checkpoint")


def test_resumed_run_matches_an_uninterrupted_one(
    tiny_checkpoint, synthetic_data, likelihood_reward_checkpoint, tmp_path
):
    def config(out, **kw):
        return _config(
            tiny_checkpoint,
            synthetic_data,
            out,
            save_strategy="steps",
            save_steps=2,
            beta=0.05,
            reward_model_path=str(likelihood_reward_checkpoint),
            **kw,
        )

    run(build_trainer(config(tmp_path / "whole")))
    with pytest.raises(KeyboardInterrupt):
        run(build_trainer(config(tmp_path / "cut"), callbacks=[KillAfterFirstCheckpoint()]))
    assert [p.name for p in (tmp_path / "cut").glob("checkpoint-*")] == ["checkpoint-2"]
    with pytest.raises(FileExistsError, match="--resume"):
        train(config(tmp_path / "cut"))
    run(build_trainer(config(tmp_path / "cut", resume=True)))
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    cut = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert cut["resumed_from"].endswith("checkpoint-2") and cut["steps"] == whole["steps"] == 4
    assert cut["policy_checksum_by_rank"] == whole["policy_checksum_by_rank"]
    assert cut["last_update"]["reward"] == pytest.approx(whole["last_update"]["reward"], abs=1e-5)


def test_held_out_evaluation_keeps_the_best_policy(
    tiny_checkpoint, synthetic_data, likelihood_reward_checkpoint, tmp_path
):
    out = tmp_path / "out"
    cfg = _config(
        tiny_checkpoint,
        synthetic_data,
        out,
        eval_strategy="steps",
        eval_steps=2,
        eval_split="val2014",
        reward_model_path=str(likelihood_reward_checkpoint),
        learning_rate=3e-3,
        save_strategy="steps",
        save_steps=2,
    )
    run(build_trainer(cfg))
    summary = json.loads((out / "summary.json").read_text())
    held = summary["held_out"]
    assert held["start"]["kl"] == 0 and held["start"]["questions"] == 8
    assert held["final"]["kl"] > 0  # the policy moved from its start
    best = summary["best"]
    assert best["metrics"]["vqa_accuracy"] >= max(held["start"]["vqa_accuracy"], held["final"]["vqa_accuracy"])
    assert best["step"] in (0, 2, 4)
    assert json.loads((out / "best" / "best.json").read_text())["step"] == best["step"]
    assert (out / "best" / "model.safetensors").is_file()
    start = AutoProcessor.from_pretrained(tiny_checkpoint).chat_template
    for saved in (out, out / "best", out / "checkpoint-4"):  # the processor as it was, not the one lent to TRL
        assert AutoProcessor.from_pretrained(saved).chat_template == start, saved


def test_bad_inputs_get_one_clear_error(tiny_checkpoint, synthetic_data, reward_checkpoint, tmp_path, capsys):
    torch.manual_seed(0)
    other, other_processor = build_tiny_vlm(TinyPreset(corpus_scenes=60, text_layers=1, vision_layers=1))
    other_rm = tmp_path / "other-rm"
    save_vlm(other, other_processor, other_rm)
    VLMForSequenceClassification.from_pretrained(other_rm).save_pretrained(other_rm)
    unanswered = tmp_path / "unanswered"
    shutil.copytree(synthetic_data, unanswered)
    (unanswered / "v2_mscoco_train2014_annotations.json").unlink()
    base = ["grpo", "--sft_model_path", str(tiny_checkpoint), "--report_to", "none", "--eval_strategy", "no"]
    data = ["--data_dir", str(synthetic_data)]
    cases = {
        "another tokenizer than the policy": base + data + ["--reward_model_path", str(other_rm)],
        "not a vlm-rlhf checkpoint": base[:1]
        + ["--sft_model_path", str(synthetic_data), *data, "--reward_model_path", str(reward_checkpoint)],
        "not a reward model": base + data + ["--reward_model_path", str(tiny_checkpoint)],
        "has no answers for train2014": base + ["--data_dir", str(unanswered)],
        "num_generations must be >= 2": base + data + ["--num_generations", "1"],
    }
    for message, argv in cases.items():
        assert cli_main(argv + ["--output_dir", str(tmp_path / "out")]) == 2, message
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # a refused run writes nothing
    assert cli_main(base + data + ["--beta_coef", "0.1"]) == 2  # an unknown key
    assert "beta_coef" in capsys.readouterr().err


def test_two_process_run_keeps_ranks_identical(tiny_checkpoint, synthetic_data, reward_checkpoint, tmp_path):
    """A real `accelerate launch -m grpo` on 2 gloo processes (CPU) with the demo's config: both ranks end with the
    same policy, held-out questions are shared and gathered back whole, and `best/` is written."""
    out = tmp_path / "2p"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "grpo"]
    flags = {
        "config": "configs/demo/grpo.yaml",
        "sft_model_path": tiny_checkpoint,
        "reward_model_path": reward_checkpoint,
        "data_dir": synthetic_data,
        "train_split": "train2014",  # the demo's feedback and dev splits: the test data has train and val only
        "eval_split": "val2014",
        "output_dir": out,
        "vision_feature_cache": out.parent / "cache",
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "per_device_eval_batch_size": 4,
        "max_steps": 3,
        "eval_steps": 3,
        "eval_limit": 6,
        "save_steps": 3,
        "learning_rate": 1e-3,
        "report_to": "none",
    }
    argv = [item for key, value in flags.items() for item in (f"--{key}", str(value))]
    done = subprocess.run(
        launch + argv, capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3 and summary["episodes"] == 3 * 8
    first, second = summary["policy_checksum_by_rank"]
    assert first == second
    assert summary["held_out"]["start"]["questions"] == summary["held_out"]["final"]["questions"] == 6
    assert (out / "best" / "model.safetensors").is_file() and (out / "checkpoint-3").is_dir()


def test_a_collapsing_run_stops_with_its_last_good_checkpoint(tiny_checkpoint, synthetic_data, tmp_path):
    """Rewarding short answers at a high learning rate collapses them; the guard stops the run, names the checkpoint
    to go back to and writes no summary."""
    cfg = _config(
        tiny_checkpoint,
        synthetic_data,
        tmp_path / "out",
        max_steps=40,
        learning_rate=3e-2,
        save_strategy="steps",
        save_steps=1,
        collapse_length_factor=2.0,
    )

    def shorter_is_better(completions, **_):
        return [-len(c[0]["content"]) / 10 for c in completions]

    with pytest.raises(TrainingStopped, match=r"answers collapsed|collapsed onto one answer") as stopped:
        run(build_trainer(cfg, reward_funcs=[shorter_is_better]))
    assert "last good checkpoint is" in str(stopped.value) and "checkpoint-" in str(stopped.value)
    assert not (tmp_path / "out" / "summary.json").exists()
