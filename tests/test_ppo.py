"""Stage 4: image-conditioned PPO. Alignment at lr 0, image conditioning, learning, resumption, guards, bad input, and
real 2-process `accelerate launch` runs (gloo on CPU).

At learning rate 0, approxkl is 0, the ratio 1 (within 1e-6) and the KL to the reference 0, on 1 process and in a
real `accelerate launch --multi_gpu --num_processes 2 -m ppo` (2 gloo processes on CPU). A minibatch deliberately
paired with the wrong images gives approxkl > 1e-4, and with the guard on the run stops at its first update saying
why, with no `summary.json`. Swapping the images of a batch changes the rollout log-probs, the policy logits, the
values and the rewards. Rollouts are scored as reward training and `reward score` score the same text (1e-4), by a
reward model with a head on the EOS and by one that reads the answer's likelihood; `ground_truth_weight` adds
exactly w x VQA accuracy to the reward model's score (nothing at 0). Before training, a reward model whose pick of 8
sampled answers is right less often than greedy decoding (one preferring the least likely answers, judged against
the policy's own greedy answers) is refused with the figures, or trained against with a warning. With a fixed rule
as reward (answers starting a-m score 1), the mean reward of the last 10 of 30 updates is above the first 10 by more
than 0.15 (measured 0.48 -> 0.98), with GAE and with RLOO's group baseline, whose advantages are checked on hand-
made scores. A run killed right after its update-2 checkpoint and resumed with `--resume` ends at the same step,
draws the same rows, and its first resumed update's scores, KL, losses and approxkl equal the uninterrupted run's
(1e-5) and it reports the reward check made when the run started, while a restart without `--resume` is refused.
Held-out evaluation at updates 0, 2 and 3 keeps the best one in `best/` and names it. A LoRA policy (reference =
adapter disabled) on 2 processes ends with identical policy checksums on both ranks, and each update's
`objective/scores` equals the mean over both ranks' rollouts in `samples.jsonl`. A reward model with another
tokenizer, a folder that is not a checkpoint, a policy given as the reward model and an unknown key on the command
line or in YAML each give one clear error and exit code 2. The guards fire on a negative KL, identical answers and
an answer length outside the band, and a run rewarded for ever shorter answers at a high learning rate stops, naming
its last good checkpoint and writing no `summary.json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import TrainerCallback
from trl.experimental.ppo.ppo_trainer import masked_whiten

from ppo.advantages import leave_one_out
from ppo.config import VLMPPOConfig
from ppo.model_calls import forward as policy_forward
from ppo.model_calls import generate_responses, last_token_score, reward_score, scalar_head
from ppo.monitor import reward_and_truth
from ppo.train import build_trainer, run
from ppo.trainer import VLMPPOTrainer
from vlm.cli import main as cli_main
from vlm.model.builder import save_vlm
from vlm.model.modeling_vlm import VLMForSequenceClassification
from vlm.synthetic.presets import TinyPreset, build_tiny_vlm
from vlm.training.guards import TrainingStopped


def _config(tiny_checkpoint, synthetic_data, out, **overrides) -> VLMPPOConfig:
    settings = dict(
        output_dir=str(out),
        sft_model_path=str(tiny_checkpoint),
        data_dir=str(synthetic_data),
        vision_feature_cache=str(out.parent / "cache"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        total_episodes=24,
        num_ppo_epochs=2,
        learning_rate=1e-3,
        report_to="none",
        eval_strategy="no",
        save_strategy="no",
        logging_steps=1,
        sample_every=0,
        eval_limit=8,
        seed=0,
        missing_eos_penalty=None,
    )
    settings.update(overrides)
    return VLMPPOConfig(**settings)


def favoured_first_letter(rows, answers) -> torch.Tensor:
    """A fixed rule: answers starting with a letter a-m score 1, all others 0."""
    return torch.tensor([1.0 if answer[:1].lower() in set("abcdefghijklm") else 0.0 for answer in answers])


def _updates(trainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "objective/scores" in h]


def test_lr_zero_reproduces_the_rollout_log_probs(tiny_checkpoint, synthetic_data, reward_checkpoint, tmp_path):
    cfg = _config(
        tiny_checkpoint, synthetic_data, tmp_path / "out", learning_rate=0.0, reward_model_path=str(reward_checkpoint)
    )
    trainer = build_trainer(cfg)
    run(trainer)
    logs = _updates(trainer)
    assert len(logs) == 3
    for log in logs:
        assert log["policy/approxkl_avg"] < 1e-6
        assert abs(log["val/ratio"] - 1) < 1e-6
        assert abs(log["objective/kl"]) < 1e-5  # policy == reference


class WrongImages(VLMPPOTrainer):
    def minibatch_images(self, images, rows):
        return super().minibatch_images(images, rows[::-1].copy())  # rows paired with another row's image


def test_minibatch_with_the_wrong_images_is_caught(tiny_checkpoint, synthetic_data, reward_checkpoint, tmp_path):
    cfg = _config(
        tiny_checkpoint,
        synthetic_data,
        tmp_path / "a",
        learning_rate=0.0,
        ratio_tolerance=1e9,
        reward_model_path=str(reward_checkpoint),
    )
    trainer = build_trainer(cfg, trainer_class=WrongImages)
    run(trainer)
    assert all(log["policy/approxkl_avg"] > 1e-4 for log in _updates(trainer))
    # With the guard on, the run stops at its first update and says why.
    cfg = _config(
        tiny_checkpoint, synthetic_data, tmp_path / "b", learning_rate=0.0, reward_model_path=str(reward_checkpoint)
    )
    with pytest.raises(TrainingStopped, match="ratio at the first minibatch"):
        run(build_trainer(cfg, trainer_class=WrongImages))
    assert not (tmp_path / "b" / "summary.json").exists()


def test_images_condition_rollout_values_and_rewards(tiny_checkpoint, synthetic_data, reward_checkpoint, tmp_path):
    cfg = _config(tiny_checkpoint, synthetic_data, tmp_path / "out", reward_model_path=str(reward_checkpoint))
    trainer = build_trainer(cfg)
    examples = trainer.train_dataset[:8]
    from ppo.data import left_pad

    queries = left_pad(examples["input_ids"], trainer.pad_id)
    images = trainer.store.inputs(torch.tensor(examples["image_idx"]), "cpu")
    swapped = {k: v.roll(1, 0) for k, v in images.items()}
    assert not torch.equal(images["vision_features"], swapped["vision_features"])
    policy, pad = trainer.policy(), trainer.pad_id

    def sample(imgs):
        torch.manual_seed(0)
        return generate_responses(policy, queries, imgs, pad, trainer.generation_config, 4)

    qr, logprobs = sample(images)
    _, logprobs_swapped = sample(swapped)
    assert not torch.allclose(logprobs, logprobs_swapped)
    with torch.no_grad():
        logits = policy_forward(policy, qr, images, pad).logits
        assert not torch.allclose(logits, policy_forward(policy, qr, swapped, pad).logits)
        value_model = trainer.accelerator.unwrap_model(trainer.model).value_model
        assert not torch.allclose(scalar_head(value_model, qr, images, pad), scalar_head(value_model, qr, swapped, pad))
        ctx = queries.shape[1]
        rewards = last_token_score(trainer.reward_model, qr, images, pad, ctx)
        assert not torch.allclose(rewards, last_token_score(trainer.reward_model, qr, swapped, pad, ctx))


def _rollouts_of(trainer, rows: list[int], answers: list[str], padding: int = 0):
    """Rollouts written by hand: the rows' left-padded prompts, each answer's tokens, EOS and `padding` pads.
    Returns (query_responses, images, context_length)."""
    from ppo.data import left_pad

    examples = trainer.train_dataset[rows]
    queries = left_pad(examples["input_ids"], trainer.pad_id)
    images = trainer.store.inputs(torch.tensor(examples["image_idx"]), "cpu")
    tokenizer, pad = trainer.tokenizer, trainer.pad_id
    responses = [tokenizer(" " + a)["input_ids"] + [tokenizer.eos_token_id] for a in answers]
    width = max(map(len, responses)) + padding
    responses = torch.tensor([r + [pad] * (width - len(r)) for r in responses])
    return torch.cat([queries, responses], 1), images, queries.shape[1]


@pytest.mark.parametrize("readout", ["eos", "likelihood"])
def test_rollouts_are_scored_as_reward_training_scores_them(
    readout, tiny_checkpoint, synthetic_data, reward_checkpoint, likelihood_reward_checkpoint, tmp_path
):
    from transformers import AutoProcessor

    from vlm.model.reward_scoring import score_answers

    rm_path = reward_checkpoint if readout == "eos" else likelihood_reward_checkpoint
    cfg = _config(tiny_checkpoint, synthetic_data, tmp_path / "out", reward_model_path=str(rm_path))
    trainer = build_trainer(cfg)
    rows = list(range(6))
    answers = ["2", "red", "yes", "two circles", "no", "blue"]
    query_responses, images, ctx = _rollouts_of(trainer, rows, answers, padding=2)  # pads after EOS, as rollouts
    pad, eos = trainer.pad_id, trainer.tokenizer.eos_token_id
    with torch.no_grad():
        rewards = reward_score(trainer.reward_model, query_responses, images, pad, eos, ctx)
        swapped = {k: v.roll(1, 0) for k, v in images.items()}
        rewards_swapped = reward_score(trainer.reward_model, query_responses, swapped, pad, eos, ctx)
    expected = score_answers(
        trainer.reward_model,
        AutoProcessor.from_pretrained(rm_path),
        list(images["vision_features"]),
        [trainer.vqa[r]["question"] for r in rows],
        answers,
    )
    assert torch.allclose(rewards, expected, atol=1e-4)
    assert (rewards - rewards_swapped).abs().max() > 1e-4  # the image reaches the reward


def test_reward_check_refuses_a_reward_model_that_picks_worse_than_greedy(
    tiny_checkpoint, synthetic_data, likelihood_reward_checkpoint, tmp_path, caplog
):
    from transformers import AutoProcessor

    from ppo.reward_check import RewardModelRefused, check_reward_model
    from vlm.model.generation import generate_answers
    from vlm.model.modeling_vlm import VLMForAnswerLikelihood

    reversed_rm = VLMForAnswerLikelihood.from_pretrained(likelihood_reward_checkpoint)
    with torch.no_grad():
        reversed_rm.likelihood_head.weight.fill_(-1.0)  # prefers the answers the policy finds least likely
    reversed_rm.save_pretrained(tmp_path / "reversed")
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    processor.save_pretrained(tmp_path / "reversed")
    cfg = _config(
        tiny_checkpoint,
        synthetic_data,
        tmp_path / "out",
        reward_model_path=str(tmp_path / "reversed"),
        reward_check="off",
        reward_check_questions=12,
        temperature=1.0,
    )
    trainer = build_trainer(cfg)
    assert trainer.reward_check is None  # off
    # Known answers = the policy's own greedy answers: greedy scores 100 %, and the reversed reward model picks
    # among 8 samples the one the policy finds least likely.
    greedy = generate_answers(
        trainer.policy().eval(),
        processor,
        trainer.store.images(trainer.vqa["image_path"]),
        trainer.vqa["question"],
        cfg.response_length,
    )
    trainer.vqa = trainer.vqa.remove_columns("answers").add_column("answers", [[a] * 10 for a in greedy])
    trainer.args.reward_check = "refuse"
    with pytest.raises(RewardModelRefused, match=r"picks answers worse than greedy decoding: best-of-8 .* greedy 100"):
        check_reward_model(trainer, processor)
    trainer.args.reward_check = "warn"
    figures = check_reward_model(trainer, processor)
    assert figures["greedy"] == 1.0 and figures["best_of_n_by_reward"] < 1.0 and figures["questions"] == 12
    assert "PPO may teach the policy to be worse" in caplog.text


@pytest.mark.parametrize("estimator", ["gae", "rloo"])
def test_a_fixed_rule_reward_is_learned(tiny_checkpoint, synthetic_data, tmp_path, estimator):
    """A fixed rule as reward is learned, with the value model's GAE and with RLOO's group baseline (4 answers per
    prompt, side by side in the rollout). (A rule that also needed the image, a-m for even image ids and n-z for odd
    ones, was not: the tiny random policy learned to start every answer with "an", the image-blind half. That the
    images condition rollouts, values and rewards is the test above.)"""
    cfg = _config(
        tiny_checkpoint,
        synthetic_data,
        tmp_path / "out",
        per_device_train_batch_size=8,  # 16 rollouts per update: with 8 the signal is too noisy to climb
        total_episodes=16 * 30,
        learning_rate=1e-2,
        num_ppo_epochs=4,
        kl_coef=0.0,
        collapse_length_factor=100.0,
        advantage_estimator=estimator,
        num_generations=4 if estimator == "rloo" else 1,
    )
    trainer = build_trainer(cfg, reward_fn=favoured_first_letter)
    run(trainer)
    scores = [log["objective/scores"] for log in _updates(trainer)]
    start, end = sum(scores[:10]) / 10, sum(scores[-10:]) / 10  # gae 0.48 -> 0.98 (16 rollouts per update)
    assert end > start + 0.15, scores
    rows = trainer.rows_by_update[1]
    prompts = rows[:: cfg.num_generations]
    assert rows == [r for r in prompts for _ in range(cfg.num_generations)] and len(set(prompts)) == len(prompts)


def test_leave_one_out_advantages_rank_answers_within_their_prompt():
    """RLOO's advantage: each answer's score minus the mean of the other answers to its prompt, the same on every
    token of the answer, 0 on padding; a KL penalty lowers it; a prompt whose answers all score alike gets one
    value for all of them, whatever its scores' level."""
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 5.0])
    padding = torch.zeros(8, 3, dtype=torch.bool)
    padding[:, 2] = True  # answers of 2 tokens
    penalty = torch.zeros(8, 3)
    advantages, returns = leave_one_out(penalty, scores, padding, num_generations=4)
    assert torch.all(advantages[:, 2] == 0) and torch.all(advantages[:, 0] == advantages[:, 1])
    first = advantages[:4, 0]
    assert first[0] > 0 > first[1] and torch.allclose(first[1:], first[1:2].expand(3))
    assert torch.allclose(advantages[4:, 0], advantages[4:5, 0].expand(4))  # same scores, same advantage
    # before whitening over the batch: 1 - 0 for the right answer, 0 - 1/3 for the others, 5 - 5 for the second prompt
    raw = torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0, 0.0])[:, None].expand(8, 3)
    assert torch.allclose(advantages, masked_whiten(raw, ~padding).masked_fill(padding, 0), atol=1e-6)
    assert torch.all(returns == 0)
    penalty[1, :2] = -0.5  # KL penalty on answer 2 of prompt 1
    penalised, _ = leave_one_out(penalty, scores, padding, num_generations=4)
    assert penalised[1, 0] < penalised[2, 0]


def test_rloo_settings_are_checked(tiny_checkpoint, synthetic_data, tmp_path):
    with pytest.raises(ValueError, match="num_generations >= 2"):
        _config(tiny_checkpoint, synthetic_data, tmp_path / "a", advantage_estimator="rloo")
    cfg = _config(tiny_checkpoint, synthetic_data, tmp_path / "b", advantage_estimator="rloo", num_generations=3)
    with pytest.raises(ValueError, match="must divide the rollouts per process"):
        build_trainer(cfg, reward_fn=favoured_first_letter)


class KillAfterFirstCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt("killed after a checkpoint")


def test_resumed_run_matches_an_uninterrupted_one(tiny_checkpoint, synthetic_data, reward_checkpoint, tmp_path):
    """Killed right after its update-2 checkpoint and resumed with `--resume`, a run ends at the same step, draws the
    same rows, its first resumed update matches the uninterrupted run's and it reports the reward check made when the
    run started; a restart without `--resume` is refused."""

    def config(out, **kw):
        return _config(
            tiny_checkpoint,
            synthetic_data,
            out,
            total_episodes=8 * 4,
            save_strategy="steps",
            save_steps=2,
            reward_model_path=str(reward_checkpoint),
            **kw,
        )

    whole = build_trainer(config(tmp_path / "whole"))
    run(whole)
    with pytest.raises(KeyboardInterrupt):
        run(build_trainer(config(tmp_path / "cut"), callbacks=[KillAfterFirstCheckpoint()]))
    assert [p.name for p in (tmp_path / "cut").glob("checkpoint-*")] == ["checkpoint-2"]
    assert not list((tmp_path / "cut/checkpoint-2").glob("custom_checkpoint_*"))  # no scheduler pickle to load
    with pytest.raises(FileExistsError, match="--resume"):
        from ppo.train import train

        train(config(tmp_path / "cut"))
    resumed = build_trainer(config(tmp_path / "cut", resume=True))
    run(resumed)
    assert resumed.state.global_step == whole.state.global_step == 4
    assert resumed.rows_by_update == {k: v for k, v in whole.rows_by_update.items() if k > 2}  # same data order
    first_whole, first_resumed = _updates(whole)[2], _updates(resumed)[2]
    assert first_resumed["step"] == first_whole["step"] == 3
    for key in ("lr", "objective/scores", "objective/kl", "loss/value_avg", "loss/policy_avg", "policy/approxkl_avg"):
        assert first_resumed[key] == pytest.approx(first_whole[key], abs=1e-5), key
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["updates"] == 4
    whole_summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["reward_check"] == whole_summary["reward_check"] is not None  # measured at the start, kept


def test_held_out_evaluation_keeps_the_best_checkpoint(tiny_checkpoint, synthetic_data, reward_checkpoint, tmp_path):
    cfg = _config(
        tiny_checkpoint,
        synthetic_data,
        tmp_path / "out",
        eval_strategy="steps",
        eval_steps=2,
        best_metric="reward",
        reward_model_path=str(reward_checkpoint),
        sample_every=1,
    )
    trainer = build_trainer(cfg)
    out = run(trainer)
    summary = json.loads((out / "summary.json").read_text())
    evals = [h for h in trainer.state.log_history if "eval/reward" in h]
    assert [h["step"] for h in evals] == [0, 2, 3]
    for h in evals:  # what best_metric: rlhf_reward chooses by
        assert h["eval/rlhf_reward"] == pytest.approx(h["eval/reward"] - cfg.kl_coef * h["eval/kl"])
    best = max(evals, key=lambda h: h["eval/reward"])
    assert summary["best"]["step"] == best["step"] and summary["best"]["metrics"]["reward"] == best["eval/reward"]
    assert summary["held_out"]["start"]["kl"] == 0.0 and summary["held_out"]["final"]["kl"] > 0
    assert (out / "best" / "model.safetensors").is_file() and (out / "model.safetensors").is_file()
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * cfg.batch_size and {"image", "question", "answer", "score"} <= set(samples[0])
    # The over-optimisation watch: per update, the reward model's own score and the truth of the same answers.
    for log in _updates(trainer):
        step = [s for s in samples if s["step"] == log["step"]]
        assert log["objective/reward_model_score"] == pytest.approx(np.mean([s["model_score"] for s in step]), abs=1e-4)
        assert log["objective/vqa_accuracy"] == pytest.approx(np.mean([s["vqa_accuracy"] for s in step]), abs=1e-4)
    assert summary["reward_vs_truth"] == "reward_vs_truth.png" and (out / "reward_vs_truth.png").stat().st_size > 1000
    series = reward_and_truth(trainer.state.log_history)
    assert [len(series[k]) for k in ("reward_model_score", "sampled_vqa_accuracy", "held_out_vqa_accuracy")] == [
        3,
        3,
        3,
    ]


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_ground_truth_weight_adds_exactly_the_bonus(
    weight, tiny_checkpoint, synthetic_data, likelihood_reward_checkpoint, tmp_path
):
    cfg = _config(
        tiny_checkpoint,
        synthetic_data,
        tmp_path / "out",
        reward_model_path=str(likelihood_reward_checkpoint),
        ground_truth_weight=weight,
    )
    trainer = build_trainer(cfg)
    rows = list(range(6))
    answers = [trainer.vqa[r]["multiple_choice_answer"] for r in rows]  # right answers: a bonus to add
    query_responses, images, ctx = _rollouts_of(trainer, rows, answers)
    with torch.no_grad():
        out = trainer._scores(rows, query_responses[:, ctx:], query_responses, images, ctx)
    assert (out["vqa_accuracy"] > 0.5).all()
    # The score PPO climbs: the reward model's alone at weight 0, plus the answer's VQA accuracy at weight 1.
    assert torch.allclose(out["scores"], out["model_scores"] + weight * out["vqa_accuracy"])


def _launch(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ppo"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(launch + args, capture_output=True, text=True, timeout=timeout, env=env)


def _flags(tiny_checkpoint, synthetic_data, reward_checkpoint, out, *extra) -> list[str]:
    return [
        "--config",
        "configs/demo/ppo.yaml",
        "--sft_model_path",
        str(tiny_checkpoint),
        "--reward_model_path",
        str(reward_checkpoint),
        "--data_dir",
        str(synthetic_data),
        "--train_split",  # the demo's feedback and dev splits: the test data has train and val only
        "train2014",
        "--eval_split",
        "val2014",
        "--output_dir",
        str(out),
        "--vision_feature_cache",
        str(out.parent / "cache"),
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--total_episodes",
        "24",
        "--report_to",
        "none",
        "--eval_limit",
        "6",
        "--eval_steps",
        "3",
        "--save_strategy",
        "no",
        "--sample_every",
        "1",
        "--local_rollout_forward_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        *extra,
    ]


def test_two_process_lora_run_syncs_ranks_and_gathers_metrics(
    tiny_checkpoint, synthetic_data, reward_checkpoint, tmp_path
):
    out = tmp_path / "2p"
    flags = _flags(tiny_checkpoint, synthetic_data, reward_checkpoint, out, "--learning_rate", "1e-3")
    done = _launch(flags + ["--lora", '{"r": 4, "alpha": 8}'])
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["updates"] == 3 and summary["lora"] == {"r": 4, "alpha": 8}
    assert summary["reference"] == "policy without its adapter"
    first, second = summary["policy_checksum_by_rank"]
    assert first == second  # both ranks end with identical policy weights
    # objective/scores is gathered: it equals the mean over both ranks' rollouts in the sample table.
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    for step in (1, 2, 3):
        rows = [s for s in samples if s["step"] == step]
        assert len(rows) == 8  # 2 ranks x 4 prompts
        assert summary["first_update" if step == 1 else "last_update"] is not None
    first_rows = [s["score"] for s in samples if s["step"] == 1]
    assert summary["first_update"]["objective/scores"] == pytest.approx(sum(first_rows) / 8, abs=1e-4)
    assert summary["held_out"]["final"]["questions"] == 6


def test_two_process_run_at_lr_zero_is_aligned(tiny_checkpoint, synthetic_data, reward_checkpoint, tmp_path):
    out = tmp_path / "2p-lr0"
    done = _launch(_flags(tiny_checkpoint, synthetic_data, reward_checkpoint, out, "--learning_rate", "0"))
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    for key in ("first_update", "last_update"):
        assert abs(summary[key]["val/ratio"] - 1) < 1e-6 and abs(summary[key]["objective/kl"]) < 1e-5


def test_bad_inputs_get_one_clear_error(tiny_checkpoint, synthetic_data, reward_checkpoint, tmp_path, capsys):
    torch.manual_seed(0)
    other, other_processor = build_tiny_vlm(TinyPreset(corpus_scenes=60, text_layers=1, vision_layers=1))
    other_rm = tmp_path / "other-rm"
    save_vlm(other, other_processor, other_rm)
    VLMForSequenceClassification.from_pretrained(other_rm).save_pretrained(other_rm)
    base = ["ppo", "--sft_model_path", str(tiny_checkpoint), "--data_dir", str(synthetic_data), "--report_to", "none"]
    cases = {
        "another tokenizer than the policy": base + ["--reward_model_path", str(other_rm)],
        "not a vlm-rlhf checkpoint": [
            "ppo",
            "--sft_model_path",
            str(synthetic_data),
            "--data_dir",
            str(synthetic_data),
            "--reward_model_path",
            str(reward_checkpoint),
        ],
        "not a reward model": base + ["--reward_model_path", str(tiny_checkpoint)],
    }
    for message, argv in cases.items():
        assert cli_main(argv + ["--output_dir", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
    typo = tmp_path / "typo.yaml"
    typo.write_text("kl_coeff: 0.1\n")
    for argv in (["--kl_coeff", "0.1"], ["--config", str(typo)]):  # unknown keys, on the command line or in YAML
        assert cli_main(base + ["--reward_model_path", str(reward_checkpoint), *argv]) == 2
        assert "kl_coeff" in capsys.readouterr().err


def test_guards_fire_on_negative_kl_and_collapsed_answers():
    from ppo.guards import kl_problem
    from vlm.training.guards import collapse_problem

    assert kl_problem(-0.01, 0.5) is None and "below -0.5" in kl_problem(-0.7, 0.5)
    assert collapse_problem(["red", "2", "yes", "no"], 2.0, 2.0, 3.0) is None
    assert "every answer of the update is 'yes'" in collapse_problem(["yes"] * 8, 2.0, 2.0, 3.0)
    assert "outside [0.67, 6.00]" in collapse_problem(["a b c d e f g"] * 2 + ["x", "y"], 7.5, 2.0, 3.0)
    assert collapse_problem(["a", "b", "c", "d"], 0.5, 2.0, 3.0) is not None  # answers shrinking to nothing


def test_a_collapsing_run_stops_with_its_last_good_checkpoint(tiny_checkpoint, synthetic_data, tmp_path):
    """Rewarding the empty answer at a high learning rate collapses the answers; the guard stops the run and
    names the checkpoint to go back to."""
    cfg = _config(
        tiny_checkpoint,
        synthetic_data,
        tmp_path / "out",
        total_episodes=8 * 40,
        learning_rate=3e-2,
        kl_coef=0.0,
        save_strategy="steps",
        save_steps=1,
        collapse_length_factor=2.0,
    )
    with pytest.raises(TrainingStopped, match=r"answers collapsed|collapsed onto one answer") as stopped:
        run(build_trainer(cfg, reward_fn=lambda rows, answers: torch.tensor([-len(a) / 10 for a in answers])))
    assert "last good checkpoint is" in str(stopped.value) and "checkpoint-" in str(stopped.value)
    assert not (tmp_path / "out" / "summary.json").exists()
