"""`eval --chat`: the chat metrics on hand-made cases, and the report on real checkpoints.

POPE accuracy, F1, yes-ratio and parsing on a hand-made table; balanced POPE questions with adversarial negatives;
object recall and hallucination on hand-made descriptions; the scenes file round trip; and `eval --chat` end to end
(every reply counted, the report's sections, a missing chat file refused).
"""

from __future__ import annotations

import json
import random

import pytest

from vlm.cli import main as cli_main
from vlm.eval.chat import description_metrics, pope_metrics, pope_questions, yes_no
from vlm.synthetic.instruct_mix import InstructMixConfig, mix_file, write_instruct_mix
from vlm.synthetic.scenes import Scene, SceneObject, load_scenes

RED_CIRCLE = SceneObject("red", "circle", 10, 10, 12, (215, 40, 40))
BLUE_SQUARE = SceneObject("blue", "square", 40, 40, 12, (45, 85, 215))
SCENE = Scene((RED_CIRCLE, BLUE_SQUARE), 64, (230, 230, 230))


def test_pope_metrics_on_a_hand_made_table():
    truths = ["yes", "yes", "no", "no", "yes"]
    answers = ["Yes", "no", "yes.", "No, there is none.", "A red circle"]  # tp, fn, fp, tn, unparsed (= fn)
    m = pope_metrics(answers, truths)
    assert m["accuracy"] == pytest.approx(2 / 5) and m["yes_ratio"] == pytest.approx(2 / 5)
    precision, recall = 1 / 2, 1 / 3
    assert m["f1"] == pytest.approx(2 * precision * recall / (precision + recall)) and m["unparsed"] == 1
    assert yes_no("Yes, there is.") == "yes" and yes_no("Nope") is None


def test_pope_questions_are_balanced_with_adversarial_negatives():
    questions = pope_questions(SCENE, random.Random(0))
    assert [t for _, t in questions].count("yes") == [t for _, t in questions].count("no") == 2
    for q, truth in questions:
        color, shape = q.removeprefix("Is there a ").removesuffix(" in the image?").split()
        present = (color, shape) in {("red", "circle"), ("blue", "square")}
        assert present == (truth == "yes")
        assert color in ("red", "blue") or shape in ("circle", "square")  # shares a colour or a shape


def test_description_metrics_count_recall_and_hallucination():
    texts = ["A red circle at the top left and a green cross.", "Nothing here."]
    m = description_metrics(texts, [SCENE, SCENE])
    assert m["object_recall"] == pytest.approx(1 / 4)  # red circle named, of 2 + 2 objects
    assert m["hallucinated_objects"] == pytest.approx(1 / 2)  # green cross is not there
    assert m["description_words"] == pytest.approx((11 + 2) / 2)


def test_scenes_file_round_trips_the_ground_truth(synthetic_data):
    scenes = load_scenes(synthetic_data, "val2014")
    questions = json.loads((synthetic_data / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())["questions"]
    assert set(scenes) == {q["image_id"] for q in questions}
    assert all(1 <= len(s.objects) <= 4 for s in scenes.values())


def test_eval_chat_reports_start_and_instruct_side_by_side(tiny_checkpoint, synthetic_data, tmp_path, capsys):
    if not mix_file(synthetic_data, "val2014").is_file():  # the session's data may hold it already
        write_instruct_mix(InstructMixConfig(data_dir=str(synthetic_data), seed=0))
    out = tmp_path / "eval"
    argv = [
        "eval",
        "--model",
        str(tiny_checkpoint),
        "--data",
        str(synthetic_data),
        "--chat",
        "true",
        "--chat_limit",
        "4",
        "--chat_scenes",
        "3",
        "--limit",
        "10",
        "--out",
        str(out),
    ]
    assert cli_main(argv) == 0
    result = json.loads((out / "eval.json").read_text())["results"][0]
    chat = result["chat"]
    assert chat["perplexity"] > 1 and chat["perplexity_tokens"] > 0
    assert chat["replies"] == 3 + chat["pope"]["questions"] + 10 + 3  # descriptions, POPE, VQA, second turns
    for key in ("eos_stop_rate", "role_leaks", "short_answer_compliance", "vqa_accuracy", "object_recall"):
        assert 0.0 <= chat[key] <= 1.0
    assert chat["pope"]["questions"] == chat["pope_qa_prompt"]["questions"] >= 6
    assert len(result["dialogues"]) == 3 and all(len(d["turns"]) == 2 for d in result["dialogues"])
    assert len(json.loads((out / "tiny" / "chat_predictions.json").read_text())) == 10
    report = (out / "report.md").read_text()
    assert "## Chat (greedy decoding)" in report and "## Sample dialogues" in report
    assert "Is there a" in report  # the follow-up question of a dialogue
    missing = [
        "eval",
        "--model",
        str(tiny_checkpoint),
        "--data",
        str(synthetic_data),
        "--chat",
        "true",
        "--chat_data",
        str(tmp_path / "none.json"),
        "--limit",
        "4",
        "--out",
        str(tmp_path / "x"),
    ]
    assert cli_main(missing) == 2
    assert "none.json: file not found" in capsys.readouterr().err
