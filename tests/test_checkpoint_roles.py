"""Every command that loads a checkpoint refuses one of the wrong kind before loading anything: a reward model
where a policy is needed (it would be read as a causal LM with a random LM head), and a policy where a reward
model is needed (its score head would be untrained)."""

import pytest

from vlm.cli import main as cli_main
from vlm.model.builder import check_checkpoint

# Each command as one line with {rm}, {policy}, {data} and {out} filled in, then split into arguments (the test's
# paths hold no spaces).
POLICY_COMMANDS = {
    "eval --model": "eval --model {rm} --data {data} --limit 2 --out {out}/eval",
    "eval --reference": "eval --model {policy} --reference {rm} --data {data} --limit 2 --out {out}/eval",
    "sft --init_from": "sft --init_from {rm} --data_dir {data} --output_dir {out}/sft --max_steps 1 --report_to none",
    "instruct --init_from": "instruct --init_from {rm} --train_data {out}/missing.json --output_dir {out}/instruct "
    "--max_steps 1 --report_to none",
    "label generate --model": "label generate --model {rm} --data {data} --questions 1 --samples 1 "
    "--out {out}/answers.jsonl",
    "ppo --sft_model_path": "ppo --sft_model_path {rm} --reward_model_path {rm} --data_dir {data} "
    "--output_dir {out}/ppo --report_to none",
    "ppo --reference_model_path": "ppo --sft_model_path {policy} --reward_model_path {rm} --reference_model_path {rm} "
    "--data_dir {data} --output_dir {out}/ppo --report_to none",
}
REWARD_COMMANDS = {
    "reward score --model": "reward score --model {policy} --answers {out}/answers.jsonl",
    "ppo --reward_model_path": "ppo --sft_model_path {policy} --reward_model_path {policy} --data_dir {data} "
    "--output_dir {out}/ppo --report_to none",
    "eval --reward_model": "eval --model {policy} --reward_model {policy} --data {data} --limit 2 --out {out}/eval",
    "label generate --reward_model": "label generate --model {policy} --reward_model {policy} --data {data} "
    "--questions 1 --samples 1 --out {out}/answers.jsonl",
}


def _argv(command: str, **paths) -> list[str]:
    return command.format(**{k: str(v) for k, v in paths.items()}).split()


@pytest.mark.parametrize("command", list(POLICY_COMMANDS))
def test_a_reward_model_is_refused_where_a_policy_is_needed(
    command, reward_checkpoint, tiny_checkpoint, synthetic_data, tmp_path, capsys
):
    paths = dict(rm=reward_checkpoint, policy=tiny_checkpoint, data=synthetic_data, out=tmp_path)
    assert cli_main(_argv(POLICY_COMMANDS[command], **paths)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0], err  # one line, and no model loaded before it
    assert f"{reward_checkpoint}: is a reward model (VLMForSequenceClassification), not a policy; pass" in err[0]
    assert command.split()[-1] in err[0]  # names the flag to fix


@pytest.mark.parametrize("command", list(REWARD_COMMANDS))
def test_a_policy_is_refused_where_a_reward_model_is_needed(
    command, reward_checkpoint, tiny_checkpoint, synthetic_data, tmp_path, capsys
):
    (tmp_path / "answers.jsonl").write_text("")
    paths = dict(rm=reward_checkpoint, policy=tiny_checkpoint, data=synthetic_data, out=tmp_path)
    assert cli_main(_argv(REWARD_COMMANDS[command], **paths)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0], err  # one line, and no model loaded before it
    assert f"{tiny_checkpoint}: is a policy (VLMForCausalLM), not a reward model; pass" in err[0]
    assert command.split()[-1] in err[0]


def test_check_checkpoint(reward_checkpoint, tiny_checkpoint, tmp_path):
    check_checkpoint(tiny_checkpoint, "policy")
    check_checkpoint(reward_checkpoint, "reward model")
    check_checkpoint(reward_checkpoint)  # any kind: reward train and the PPO value model start from either
    with pytest.raises(ValueError, match=f"^{tmp_path} is not a vlm-rlhf checkpoint"):
        check_checkpoint(tmp_path, "policy")
    (tmp_path / "config.json").write_text('{"model_type": "vlm_rlhf", "architectures": ["Other"]}')
    with pytest.raises(ValueError, match=f"^{tmp_path}: is a VLM checkpoint saved as Other, not a policy"):
        check_checkpoint(tmp_path, "policy")
    with pytest.raises(AssertionError, match="role"):  # a programming error, not bad input
        check_checkpoint(tiny_checkpoint, "value model")
