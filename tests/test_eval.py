"""`vlm-rlhf eval`: official-format predictions, metrics equal to vlm.eval.metrics by hand, side-by-side report.

The metrics of two checkpoints equal `vlm/eval/metrics.py` applied by hand to their own `predictions.json`; a split
without annotations gets predictions only; a folder that is not a VLM is refused before anything loads; answers are
cut at EOS or a newline and over-long ones counted; repeated `--model` flags are merged. With `--reward_model` and
`--reference`: the mean score equals the reward model applied by hand to the predictions, and the KL of a
checkpoint to itself is 0, of a nudged copy > 0. Within-question pair accuracy on a hand-made table.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict

import pytest
import torch

from vlm.cli import main as cli_main
from vlm.cli.evaluate import _merge_repeated
from vlm.data import load_vqa
from vlm.eval.metrics import vqa_accuracy
from vlm.model.generation import _decode


def test_eval_two_checkpoints_matches_the_metric_by_hand(tiny_checkpoint, synthetic_data, tmp_path, capsys):
    other = shutil.copytree(tiny_checkpoint, tmp_path / "runs" / "tiny")  # same weights under another name
    out = tmp_path / "eval"
    argv = [
        "eval",
        "--model",
        str(tiny_checkpoint),
        "--model",
        str(other),
        "--data",
        str(synthetic_data),
        "--limit",
        "30",
        "--out",
        str(out),
        "--max_new_tokens",
        "3",
        "--batch_size",
        "8",
    ]
    assert cli_main(argv) == 0
    report = json.loads((out / "eval.json").read_text())
    first, second = report["results"]
    assert first["name"] != second["name"]
    assert first["metrics"] == second["metrics"]  # greedy decoding of identical weights

    questions = load_vqa(synthetic_data, "val2014", limit=30)
    predictions = json.loads((out / first["name"] / "predictions.json").read_text())
    assert [set(p) for p in predictions] == [{"question_id", "answer"}] * 30  # the official results format
    by_id = {p["question_id"]: p["answer"] for p in predictions}
    per_type = defaultdict(list)
    for row in questions:
        per_type[row["answer_type"]].append(vqa_accuracy(by_id[row["question_id"]], row["answers"]))
    metrics = first["metrics"]
    everything = [a for values in per_type.values() for a in values]
    assert metrics["accuracy"] == pytest.approx(sum(everything) / len(everything))
    for answer_type, values in per_type.items():
        assert metrics["accuracy_by_answer_type"][answer_type] == pytest.approx(sum(values) / len(values))
    assert metrics["empty_answers"] == sum(1 for a in by_id.values() if not a.strip())

    report_md = (out / "report.md").read_text()
    assert first["name"] in report_md and second["name"] in report_md and "how many" in report_md
    assert (out / "accuracy_by_answer_type.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "VQA accuracy" in capsys.readouterr().out


def test_eval_without_annotations_writes_predictions_only(tiny_checkpoint, synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    (data / "v2_mscoco_val2014_annotations.json").unlink()
    out = tmp_path / "eval"
    assert (
        cli_main(["eval", "--model", str(tiny_checkpoint), "--data", str(data), "--limit", "5", "--out", str(out)]) == 0
    )
    result = json.loads((out / "eval.json").read_text())["results"][0]
    assert result["metrics"] is None
    assert len(json.loads((out / result["name"] / "predictions.json").read_text())) == 5
    assert "predictions only" in (out / "report.md").read_text()


def test_eval_refuses_a_folder_that_is_not_a_vlm(tiny_checkpoint, synthetic_data, tmp_path, capsys):
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    argv = [
        "eval",
        "--model",
        str(tiny_checkpoint),
        str(not_a_model),
        "--data",
        str(synthetic_data),
        "--out",
        str(tmp_path / "eval"),
    ]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert f"{not_a_model} is not a vlm-rlhf checkpoint" in err
    assert not (tmp_path / "eval").exists()  # refused before evaluating anything


def test_answers_are_cut_at_eos_or_newline_and_overlong_ones_counted(tiny_vlm):
    _, processor = tiny_vlm
    tok = processor.tokenizer
    red, eos, newline = tok.encode(" red"), tok.eos_token_id, tok.encode("\n")
    assert _decode(red + [eos] + red, tok).text == "red" and _decode(red + [eos], tok).finished
    assert _decode(red + newline + red, tok).text == "red" and _decode(red + newline, tok).finished
    assert not _decode(red + red, tok).finished  # hit max_new_tokens: an over-long answer


def test_repeated_model_flags_are_merged():
    assert _merge_repeated(["--model", "a", "--data", "d", "--model", "b", "c"], "--model") == [
        "--data",
        "d",
        "--model",
        "a",
        "b",
        "c",
    ]


def test_eval_reports_reward_score_and_kl_to_a_reference(tiny_checkpoint, synthetic_data, tmp_path, capsys):
    import torch
    from transformers import AutoProcessor

    from vlm.data.images import load_image
    from vlm.model.builder import load_vlm, save_vlm
    from vlm.model.modeling_vlm import VLMForSequenceClassification
    from vlm.model.reward_scoring import load_reward_model, score_answers

    torch.manual_seed(3)
    rm = VLMForSequenceClassification.from_pretrained(tiny_checkpoint)
    rm.save_pretrained(tmp_path / "rm")
    AutoProcessor.from_pretrained(tiny_checkpoint).save_pretrained(tmp_path / "rm")
    model, processor = load_vlm(tiny_checkpoint)
    with torch.no_grad():
        for p in model.model.language_model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a nearby policy: its KL to the original is small but > 0
    save_vlm(model, processor, tmp_path / "nudged")
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(tiny_checkpoint), str(tmp_path / "nudged"), "--name", "base", "nudged"]
    argv += ["--data", str(synthetic_data), "--limit", "12", "--out", str(out), "--max_new_tokens", "3"]
    argv += ["--reward_model", str(tmp_path / "rm"), "--reference", str(tiny_checkpoint)]
    assert cli_main(argv) == 0
    base, nudged = json.loads((out / "eval.json").read_text())["results"]
    assert base["metrics"]["kl_to_reference"] == pytest.approx(0.0, abs=1e-6)
    assert nudged["metrics"]["kl_to_reference"] > 1e-4
    questions = load_vqa(synthetic_data, "val2014", limit=12)
    answers = [p["answer"] for p in json.loads((out / "nudged" / "predictions.json").read_text())]
    rm_model, rm_processor = load_reward_model(tmp_path / "rm")
    by_hand = score_answers(
        rm_model, rm_processor, [load_image(p) for p in questions["image_path"]], questions["question"], answers
    ).mean()
    assert nudged["metrics"]["reward_score"] == pytest.approx(float(by_hand), abs=1e-5)
    assert "Reward and KL" in (out / "report.md").read_text() and "KL to the reference" in capsys.readouterr().out


def test_within_question_pair_accuracy_on_a_hand_made_table():
    """Pairs are formed only inside a question and only where the truth differs; a tie in score is wrong."""
    from vlm.eval.best_of_n import within_question_pair_accuracy

    # question a: 3 answers (truth 1, 0, 0.3): pairs (0,1) right, (0,2) right, (1,2) wrong; question b: a tie
    scores = [2.0, 1.0, 0.5, 0.7, 0.7, 9.0]
    truth = [1.0, 0.0, 0.3, 1.0, 0.0, 1.0]
    questions = ["a", "a", "a", "b", "b", "c"]
    accuracy, pairs = within_question_pair_accuracy(scores, truth, questions)
    assert pairs == 4 and accuracy == pytest.approx(2 / 4)
    assert within_question_pair_accuracy([1.0], [1.0], ["a"])[1] == 0


def test_best_of_n_summary_on_a_hand_made_table():
    """The reward model's pick, the truth's pick, pair accuracy and the ROC-AUC over every sample, from known scores:
    a reward model that ranks every sample rightly gets AUC 1 and the truth's pick, its mirror AUC 0 and the worst."""
    from vlm.eval.best_of_n import summarise

    greedy = torch.tensor([1.0, 0.0])
    truth = torch.tensor([[1.0, 0.0, 0.3], [0.0, 0.0, 1.0]])
    right = summarise(greedy, truth * 2 - 1, truth)
    assert right["roc_auc"] == pytest.approx(1.0) and right["pair_accuracy"] == pytest.approx(1.0)
    assert right["best_of_n_by_reward"] == pytest.approx(1.0) == right["best_of_n_by_truth"]
    assert right["pairs"] == 5 and right["greedy"] == pytest.approx(0.5)
    wrong = summarise(greedy, -truth, truth)
    assert wrong["roc_auc"] == pytest.approx(0.0) and wrong["pair_accuracy"] == pytest.approx(0.0)
    assert wrong["best_of_n_by_reward"] == pytest.approx(0.0)
