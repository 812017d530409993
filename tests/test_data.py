"""Synthetic data in the official formats, the readers, and their errors on bad input.

The synthetic writer is deterministic per seed and refuses to overwrite a dataset made with other parameters; its
feedback and dev splits are other scenes that change no other split; its
answers look like VQA's (every question family well represented, balanced yes/no, humans who mostly but not always
agree). The VQA v2 reader round-trips the synthetic files (ids, answers, COCO file names), gives questions only
without annotations, and names the file and the record for malformed JSON, a missing or corrupt image, an
annotation with an unknown question id and a record missing a field. The LLaVA-Instruct reader round-trips and
names the record for its errors.
"""

import collections
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from vlm.data import DataError, load_image, load_llava_instruct, load_vqa
from vlm.data.vqa import annotations_file, questions_file
from vlm.eval.metrics import normalize_answer
from vlm.synthetic.dataset import SynthConfig, write_synthetic_dataset


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "synth.json":
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_synthetic_is_deterministic_per_seed(tmp_path):
    a = write_synthetic_dataset(SynthConfig(out=str(tmp_path / "a"), train=6, val=3, seed=1))
    b = write_synthetic_dataset(SynthConfig(out=str(tmp_path / "b"), train=6, val=3, seed=1))
    c = write_synthetic_dataset(SynthConfig(out=str(tmp_path / "c"), train=6, val=3, seed=2))
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a) != tree_digest(c)
    # the val split does not depend on the train size
    d = write_synthetic_dataset(SynthConfig(out=str(tmp_path / "d"), train=9, val=3, seed=1))
    assert (a / "v2_mscoco_val2014_annotations.json").read_bytes() == (
        d / "v2_mscoco_val2014_annotations.json"
    ).read_bytes()


def test_feedback_and_dev_splits_are_other_scenes_and_change_nothing_else(tmp_path):
    """The feedback and dev splits are written only when asked for, in the VQA layout, with image ids no other
    split has and scenes of their own stream: the train and val splits are byte for byte those of a dataset
    without them, and a dataset from before they existed (no such keys in synth.json) is still recognised."""
    plain = write_synthetic_dataset(SynthConfig(out=str(tmp_path / "plain"), train=6, val=3, seed=1))
    assert not (plain / "feedback2014").exists() and not (plain / "dev2014").exists()
    both = write_synthetic_dataset(SynthConfig(out=str(tmp_path / "both"), train=6, val=3, feedback=8, dev=4, seed=1))
    for name in ("v2_mscoco_train2014_annotations.json", "v2_mscoco_val2014_annotations.json"):
        assert (plain / name).read_bytes() == (both / name).read_bytes()
    ids = {
        split: set(load_vqa(both, split)["image_id"]) for split in ("train2014", "val2014", "feedback2014", "dev2014")
    }
    assert [len(v) for v in ids.values()] == [6, 3, 8, 4]
    assert len(set().union(*ids.values())) == 21  # no image id in two splits
    feedback = load_vqa(both, "feedback2014")
    assert "answers" in feedback.column_names and Path(feedback[0]["image_path"]).parent.name == "feedback2014"
    manifest = plain / "synth.json"
    old = {k: v for k, v in json.loads(manifest.read_text()).items() if k not in ("feedback", "dev")}
    manifest.write_text(json.dumps(old))
    assert write_synthetic_dataset(SynthConfig(out=str(plain), train=6, val=3, seed=1)) == plain


def test_synthetic_refuses_to_overwrite_other_parameters(tmp_path, synthetic_data):
    same = SynthConfig(out=str(synthetic_data), train=24, val=12, seed=3)
    assert write_synthetic_dataset(same) == synthetic_data  # finished and identical: kept
    with pytest.raises(FileExistsError, match="other parameters"):
        write_synthetic_dataset(SynthConfig(out=str(synthetic_data), train=24, val=12, seed=4))


def test_vqa_reader_round_trips_official_files(synthetic_data):
    raw_q = json.loads(questions_file(synthetic_data, "val2014").read_text())
    raw_a = json.loads(annotations_file(synthetic_data, "val2014").read_text())
    assert raw_q["task_type"] == "Open-Ended" and raw_q["data_subtype"] == "val2014"
    ds = load_vqa(synthetic_data, "val2014", verify_images=True)
    assert len(ds) == len(raw_q["questions"]) == len(raw_a["annotations"])
    by_id = {a["question_id"]: a for a in raw_a["annotations"]}
    for row, q in zip(ds, raw_q["questions"]):
        ann = by_id[row["question_id"]]
        assert row["question"] == q["question"] and row["image_id"] == q["image_id"]
        assert row["answers"] == [x["answer"] for x in ann["answers"]] and len(row["answers"]) == 10
        assert row["multiple_choice_answer"] == ann["multiple_choice_answer"]
        assert Path(row["image_path"]).name == f"COCO_val2014_{row['image_id']:012d}.jpg"
        assert row["question_id"] // 1000 == row["image_id"]  # VQA's id scheme
    assert load_image(ds[0]["image_path"]).size == (64, 64)


def test_synthetic_answers_look_like_vqa(tmp_path):
    data = write_synthetic_dataset(SynthConfig(out=str(tmp_path / "d"), train=300, val=1, seed=0))
    ds = load_vqa(data, "train2014")
    types = collections.Counter(ds["question_type"])
    assert set(types) == {"what color is the", "what shape is the", "how many", "is there a", "is the"}
    assert min(types.values()) / len(ds) > 0.1  # every family well represented
    yes_no = [a for a, t in zip(ds["multiple_choice_answer"], ds["answer_type"]) if t == "yes/no"]
    assert 0.4 < yes_no.count("yes") / len(yes_no) < 0.6  # no yes/no shortcut
    # humans mostly agree with the majority, but not always (realistic disagreement)
    agreement = [
        sum(normalize_answer(a) == mc for a in answers) / 10
        for answers, mc in zip(ds["answers"], ds["multiple_choice_answer"])
    ]
    assert 0.75 < sum(agreement) / len(agreement) < 0.97
    assert any(a < 1 for a in agreement)


def test_vqa_without_annotations_gives_questions_only(tmp_path, synthetic_data):
    data = copy_data(synthetic_data, tmp_path / "d")
    annotations_file(data, "val2014").unlink()
    ds = load_vqa(data, "val2014")
    assert "answers" not in ds.column_names and len(ds) > 0
    with pytest.raises(DataError, match="annotations file not found"):
        load_vqa(data, "val2014", require_annotations=True)


def test_vqa_rejects_malformed_json(tmp_path, synthetic_data):
    data = copy_data(synthetic_data, tmp_path / "d")
    path = questions_file(data, "val2014")
    path.write_text(path.read_text()[:-20])
    with pytest.raises(DataError, match=rf"{path.name}: malformed JSON at line 1"):
        load_vqa(data, "val2014")


def test_vqa_rejects_missing_image(tmp_path, synthetic_data):
    data = copy_data(synthetic_data, tmp_path / "d")
    first = json.loads(questions_file(data, "val2014").read_text())["questions"][0]
    image = data / "val2014" / f"COCO_val2014_{first['image_id']:012d}.jpg"
    image.unlink()
    with pytest.raises(DataError, match=rf"{image.name}: image file not found \(question_id {first['question_id']}"):
        load_vqa(data, "val2014")


def test_vqa_rejects_corrupt_image(tmp_path, synthetic_data):
    data = copy_data(synthetic_data, tmp_path / "d")
    first = json.loads(questions_file(data, "val2014").read_text())["questions"][0]
    image = data / "val2014" / f"COCO_val2014_{first['image_id']:012d}.jpg"
    image.write_bytes(b"this is not a jpeg")
    with pytest.raises(
        DataError, match=rf"{image.name}: corrupt or unreadable image \(question_id {first['question_id']}"
    ):
        load_vqa(data, "val2014", verify_images=True)
    ds = load_vqa(data, "val2014")  # lazily: the error comes when the image is decoded
    with pytest.raises(DataError, match=rf"{image.name}: corrupt.*question_id 7"):
        load_image(ds[0]["image_path"], "question_id 7")


def test_vqa_rejects_annotation_for_unknown_question(tmp_path, synthetic_data):
    data = copy_data(synthetic_data, tmp_path / "d")
    path = annotations_file(data, "val2014")
    raw = json.loads(path.read_text())
    raw["annotations"][2]["question_id"] = 123456789
    path.write_text(json.dumps(raw))
    with pytest.raises(
        DataError, match=rf"{path.name}: annotations\[2\] \(question_id 123456789\) refers to a question id not in"
    ):
        load_vqa(data, "val2014")


def test_vqa_rejects_record_missing_field(tmp_path, synthetic_data):
    data = copy_data(synthetic_data, tmp_path / "d")
    path = questions_file(data, "val2014")
    raw = json.loads(path.read_text())
    del raw["questions"][1]["question"]
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"questions\[1\] \(question_id \d+\) lacks 'question'"):
        load_vqa(data, "val2014")


def test_llava_reader_round_trips(synthetic_data):
    path = synthetic_data / "llava_instruct_val2014.json"
    raw = json.loads(path.read_text())
    ds = load_llava_instruct(path, synthetic_data / "val2014", verify_images=True)
    assert len(ds) == len(raw) == 12
    for row, item in zip(ds, raw):
        assert row["conversations"] == item["conversations"]
        assert row["image_path"].endswith(item["image"])
        first = item["conversations"][0]["value"]
        assert first.startswith("<image>") or first.endswith("<image>")
        assert [t["from"] for t in row["conversations"]][:2] == ["human", "gpt"]


def test_llava_reader_errors(tmp_path, synthetic_data):
    image_folder = synthetic_data / "val2014"
    raw = json.loads((synthetic_data / "llava_instruct_val2014.json").read_text())
    path = tmp_path / "conv.json"

    bad = [dict(raw[0]), dict(raw[1], conversations=[{"from": "human", "value": "What <image> is this?"}])]
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=rf"conv.json: record \[1\] \(id {raw[1]['id']}\) needs exactly one <image>"):
        load_llava_instruct(path, image_folder)

    path.write_text(json.dumps([dict(raw[0], image="missing.jpg")]))
    with pytest.raises(DataError, match=r"missing.jpg: image file not found \(conv.json record \[0\]"):
        load_llava_instruct(path, image_folder)

    path.write_text(json.dumps([dict(raw[0], conversations=[{"from": "robot", "value": "hi"}])]))
    with pytest.raises(DataError, match=r"conversations\[0\] needs 'from'"):
        load_llava_instruct(path, image_folder)

    path.write_text("[{")
    with pytest.raises(DataError, match="conv.json: malformed JSON"):
        load_llava_instruct(path, image_folder)

    text_only = [{"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}]
    path.write_text(json.dumps(text_only))
    assert load_llava_instruct(path, image_folder)[0]["image_path"] == ""


def test_an_empty_split_is_one_error_naming_the_file(tmp_path, synthetic_data, tiny_checkpoint, capsys):
    """`{"questions": []}` stops `data check`, `eval` and `sft` with the same line naming the questions file (not a
    missing-column message, a report of nothing, or a StopIteration traceback)."""
    from vlm.cli import main

    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    empty = questions_file(data, "val2014")
    empty.write_text(json.dumps({"questions": []}))
    commands = [
        ["data", "check", "--data", str(data), "--split", "val2014"],
        [
            "eval",
            "--model",
            str(tiny_checkpoint),
            "--data",
            str(data),
            "--split",
            "val2014",
            "--out",
            str(tmp_path / "e"),
        ],
        [
            "sft",
            "--init_from",
            str(tiny_checkpoint),
            "--data_dir",
            str(data),
            "--train_split",
            "val2014",
            "--output_dir",
            str(tmp_path / "sft"),
            "--max_steps",
            "1",
            "--report_to",
            "none",
        ],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"error: {empty}: no questions in the file (split val2014)" in err and "Traceback" not in err
