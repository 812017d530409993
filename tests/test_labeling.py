"""Stage 2 without a server: answer records, the label store, aggregation, the labeling config, the simulator.

Store versions and atomic parts (an append never rewrites history, an interrupted write leaves no part, a second
writer waits for the lock, each part is read once across appends, bad rows are refused and corrupt lines named, a
killed append's temporary part is removed by the next append and by `labels stats`, the folder is synced after the
rename); `label generate` refuses an existing output unless `--overwrite true`, which drops the stale gold key; a
JWT-shaped key the SDK rejects in its constructor is a one-line refusal;
majority and tie aggregation and pairwise agreement on a hand-made table, Cohen's kappa and Krippendorff's alpha on
hand-computed tables; answers-file errors name the line; our labeling config is told apart from others'; sampled
answers are reproducible with duplicates merged; simulated annotators match the ground truth at 0 % error and flip
25-35 % of verdicts at 30 %; simulating twice stores nothing new.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from labeling.generate import GenerateConfig, generate
from labeling.project import LABEL_CONFIG, config_problems, prediction_from_answer, read_annotation
from labeling.simulate import SimulateConfig, simulate, simulated_labels
from vlm.data.errors import DataError
from vlm.data.vqa import load_vqa
from vlm.eval.metrics import vqa_accuracy
from vlm.labels.agreement import cohen_kappa_by_pair, krippendorff_alpha
from vlm.labels.answers import answer_id, read_answers
from vlm.labels.store import LOCK, LabelStore, aggregate_verdicts, label_stats, pairwise_agreement


def _row(annotation: str, answer: str, annotator: str, verdict: str, **extra) -> dict:
    return {
        "annotation_id": annotation,
        "answer_id": answer,
        "annotator": annotator,
        "verdict": verdict,
        "source": "label-studio",
        **extra,
    }


def test_store_appends_versions_and_never_rewrites(tmp_path):
    store = LabelStore(tmp_path / "labels")
    assert store.rows() == [] and store.latest() == []
    first = store.append([_row("ls/1/1", "a", "ann1", "correct"), _row("ls/1/2", "a", "ann2", "incorrect")])
    assert [r["version"] for r in first] == [1, 1]
    part = store.parts()[0]
    before = part.read_bytes()
    assert store.append([_row("ls/1/1", "a", "ann1", "correct", updated_at="later")]) == []  # same verdict
    changed = store.append([_row("ls/1/1", "a", "ann1", "incorrect", corrected_answer="2")])
    assert [(r["version"], r["verdict"]) for r in changed] == [(2, "incorrect")]
    assert part.read_bytes() == before and len(store.parts()) == 2  # history untouched, one new part
    latest = {r["annotation_id"]: r for r in store.latest()}
    assert latest["ls/1/1"]["verdict"] == "incorrect" and latest["ls/1/1"]["version"] == 2
    assert len(store.rows()) == 3


def test_store_reads_each_part_once_across_appends(tmp_path, monkeypatch):
    import vlm.labels.store as label_store

    reads = Counter()
    real = label_store.read_jsonl

    def counting(path):
        reads[path.name] += 1
        return real(path)

    monkeypatch.setattr(label_store, "read_jsonl", counting)
    store = LabelStore(tmp_path / "labels")
    for page in range(5):  # a pull appending page after page
        store.append([_row(f"ls/1/{page}", "a", f"ann{page}", "correct")])
    assert len(store.latest()) == 5 and set(reads.values()) == {1} and len(reads) == 5
    LabelStore(tmp_path / "labels").latest()  # another reader reads the parts itself
    assert set(reads.values()) == {2}


def test_store_refuses_bad_rows_and_names_corrupt_lines(tmp_path):
    store = LabelStore(tmp_path / "labels")
    with pytest.raises(DataError, match="new label row 1: unknown verdict 'maybe'"):
        store.append([_row("x/1", "a", "ann1", "correct"), _row("x/2", "a", "ann1", "maybe")])
    assert store.parts() == []  # nothing half-written
    store.append([_row("x/1", "a", "ann1", "correct")])
    part = store.parts()[0]
    part.write_text(part.read_text() + '{"annotation_id": "x/2", oops\n')
    with pytest.raises(DataError, match=rf"{part.name}:2: malformed JSON"):
        store.rows()
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="is a file"):
        LabelStore(tmp_path / "file")


def test_store_write_interrupted_leaves_no_part(tmp_path, monkeypatch):
    store = LabelStore(tmp_path / "labels")
    store.append([_row("x/1", "a", "ann1", "correct")])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("vlm.io.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.append([_row("x/2", "a", "ann2", "correct")])
    monkeypatch.undo()
    assert len(store.parts()) == 1 and len(store.rows()) == 1
    assert not list((tmp_path / "labels").glob("*.tmp"))  # no temporary file left behind


def _append_one(path: str, started) -> None:
    store = LabelStore(path)
    started.set()
    store.append([_row("ls/1/9", "a", "ann2", "incorrect")])


def test_a_second_writer_waits_for_the_store_lock(tmp_path):
    import fcntl
    import multiprocessing

    store = LabelStore(tmp_path / "labels")
    store.append([_row("ls/1/1", "a", "ann1", "correct")])
    context = multiprocessing.get_context("spawn")
    started = context.Event()
    writer = context.Process(target=_append_one, args=(str(store.path), started))
    with open(store.path / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pull is writing
        writer.start()
        assert started.wait(120)  # the writer is about to append
        writer.join(2)
        assert writer.is_alive() and len(store.parts()) == 1  # it waits and writes nothing meanwhile
    writer.join(60)
    assert writer.exitcode == 0 and len(store.rows()) == 2


def _append_killed_before_rename(path: str) -> None:
    """An append killed (SIGKILL: no cleanup runs) after writing its part, before renaming it into place."""
    import os
    import signal

    import vlm.io

    vlm.io.os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
    LabelStore(path).append([_row("ls/1/5", "a", "ann3", "unsure")])


def test_stale_temporaries_of_a_killed_append_are_removed(tmp_path, capsys):
    import multiprocessing

    from vlm.cli import main

    store = LabelStore(tmp_path / "labels")
    store.append([_row("ls/1/1", "a", "ann1", "correct")])
    writer = multiprocessing.get_context("spawn").Process(target=_append_killed_before_rename, args=(str(store.path),))
    writer.start()
    writer.join(120)
    stale = list(store.path.glob(".labels-*.tmp"))
    assert writer.exitcode == -9 and len(stale) == 1 and "ann3" in stale[0].read_text()  # as a killed append leaves it
    store.append([_row("ls/1/2", "a", "ann2", "incorrect")])  # the next append holds the lock: no writer is live
    assert not list(store.path.glob("*.tmp"))
    assert [(r["annotator"], r["verdict"]) for r in store.rows()] == [("ann1", "correct"), ("ann2", "incorrect")]

    (store.path / stale[0].name).write_text(stale[0].name)  # another one, then `labels stats` cleans up too
    assert main(["labels", "stats", "--store", str(store.path)]) == 0
    assert "2 labels on 1 answers" in capsys.readouterr().out and not list(store.path.glob("*.tmp"))


def test_atomic_writes_fsync_the_folder_after_the_rename(tmp_path, monkeypatch):
    import os
    import stat

    import vlm.io

    synced = []
    real = os.fsync

    def recording(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real(fd)

    monkeypatch.setattr(vlm.io.os, "fsync", recording)
    vlm.io.atomic_write_text(tmp_path / "part.jsonl", "{}\n")
    assert synced == [False, True]  # the data, then the folder holding the new name


def test_aggregation_majority_ties_and_agreement():
    rows = [
        _row("1", "a", "p", "correct"),
        _row("2", "a", "q", "correct"),
        _row("3", "a", "r", "incorrect"),
        _row("4", "b", "p", "correct"),
        _row("5", "b", "q", "incorrect"),
        _row("6", "c", "p", "unsure"),
        _row("7", "d", "q", "incorrect", corrected_answer="red"),
    ]
    aggregated = aggregate_verdicts(rows)
    assert {k: v["verdict"] for k, v in aggregated.items()} == {
        "a": "correct",
        "b": "unsure",  # a tie
        "c": "unsure",
        "d": "incorrect",
    }
    assert aggregated["a"]["votes"] == {"correct": 2, "incorrect": 1, "unsure": 0}
    assert aggregated["a"]["agreement"] == pytest.approx(2 / 3) and aggregated["d"]["corrected_answers"] == ["red"]
    # Pairs on multiply-labelled answers: a has 3 pairs (1 agreeing), b has 1 (0 agreeing).
    assert pairwise_agreement(rows) == {"items": 2, "pairs": 4, "agreement": 0.25}
    stats = label_stats(rows)
    assert stats["by_verdict"] == {"correct": 3, "incorrect": 3, "unsure": 1}
    assert stats["by_annotator"]["q"] == {"correct": 1, "incorrect": 2, "unsure": 0}
    assert stats["aggregated_by_verdict"] == {"correct": 1, "incorrect": 1, "unsure": 2}


def test_chance_corrected_agreement_on_hand_computed_tables():
    # Cohen's kappa, two annotators on 4 answers: p_o = 3/4, p_e = .5 * .25 + .5 * .75 = .5 -> (.75 - .5) / .5 = .5
    a = ["correct", "correct", "incorrect", "incorrect"]
    b = ["correct", "incorrect", "incorrect", "incorrect"]
    rows = [_row(f"{w}{i}", f"x{i}", w, v) for w, verdicts in (("a", a), ("b", b)) for i, v in enumerate(verdicts)]
    assert cohen_kappa_by_pair(rows) == {"a | b": {"shared": 4, "kappa": pytest.approx(0.5)}}
    # Krippendorff's (2011) worked example: 4 coders, 12 units, missing values, nominal alpha = 0.743.
    table = {
        "A": "1 2 3 3 2 1 4 1 2 . . .",
        "B": "1 2 3 3 2 2 4 1 2 5 . 3",
        "C": ". 3 3 3 2 3 4 2 2 5 1 .",
        "D": "1 2 3 3 2 4 4 1 2 5 1 .",
    }
    rows = [
        _row(f"{coder}{unit}", f"u{unit:02d}", coder, "correct") | {"verdict": value}
        for coder, line in table.items()
        for unit, value in enumerate(line.split())
        if value != "."
    ]
    assert krippendorff_alpha(rows) == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(rows[:1]) is None
    pairs = cohen_kappa_by_pair(rows)
    assert pairs["A | B"]["shared"] == 9 and pairs["C | D"]["shared"] == 10  # missing labels leave units out


def test_answers_file_errors_name_the_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    good = {"answer_id": "x", "image": "i.jpg", "question_id": 1, "question": "q?", "answer": "a"}
    path.write_text(json.dumps(good) + "\n{broken\n")
    with pytest.raises(DataError, match=r"answers.jsonl:2: malformed JSON"):
        read_answers(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps({"answer_id": "y"}) + "\n")
    with pytest.raises(DataError, match=r"answers.jsonl:2: record has no image, question_id, question, answer"):
        read_answers(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(DataError, match="answer_id x appears twice"):
        read_answers(path)
    with pytest.raises(DataError, match="file not found"):
        read_answers(tmp_path / "none.jsonl")
    assert (
        answer_id("img", "q?", "two", "m") == answer_id("img", " q? ", "two ", "m") != answer_id("img", "q?", "2", "m")
    )


def test_labeling_config_is_ours_and_others_are_told_apart():
    assert config_problems(LABEL_CONFIG) == []
    assert any("no <Choices" in p for p in config_problems('<View><Text name="t" value="$text"/></View>'))
    renamed = LABEL_CONFIG.replace('"unsure"', '"skip"')
    assert "not ['correct', 'incorrect', 'unsure']" in " ".join(config_problems(renamed))
    assert "not valid XML" in config_problems("<View>")[0]
    result = [
        {"from_name": "verdict", "value": {"choices": ["incorrect"]}},
        {"from_name": "corrected_answer", "value": {"text": [" red "]}},
    ]
    assert read_annotation(result, "task 1") == ("incorrect", "red")
    with pytest.raises(DataError, match="task 1: unknown verdict 'maybe'"):
        read_annotation([{"from_name": "verdict", "value": {"choices": ["maybe"]}}], "task 1")
    with pytest.raises(DataError, match="has no verdict"):
        read_annotation([], "task 1")
    prediction = prediction_from_answer({"p_correct": 0.2, "reward_model": "rm-1"}, None)
    assert prediction["model_version"] == "rm-1" and prediction["score"] == pytest.approx(0.8)
    assert prediction["result"][0]["value"] == {"choices": ["incorrect"]}
    assert prediction_from_answer({"answer": "x"}, "rm") is None


@pytest.fixture(scope="module")
def sampled_answers(tiny_checkpoint, synthetic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("answers") / "answers.jsonl"
    summary = generate(
        GenerateConfig(model=str(tiny_checkpoint), data=str(synthetic_data), questions=8, samples=3, out=str(out))
    )
    return out, summary


def test_generate_samples_merges_and_is_reproducible(sampled_answers, tiny_checkpoint, synthetic_data, tmp_path):
    out, summary = sampled_answers
    records = read_answers(out)
    assert summary["questions"] == 8 and summary["samples"] == 24
    assert len(records) == summary["answers"] and sum(r["count"] for r in records) == 24 - summary["empty_dropped"]
    per_question = Counter(r["question_id"] for r in records)
    assert len(per_question) <= 8 and max(per_question.values()) <= 3
    for r in records:  # duplicates merged: one record per distinct answer to a question
        assert r["answer"].strip() and r["samples"] == 3 and r["sampling"]["do_sample"] is True
    assert len({(r["question_id"], r["answer"]) for r in records}) == len(records)
    again = tmp_path / "again.jsonl"
    generate(
        GenerateConfig(model=str(tiny_checkpoint), data=str(synthetic_data), questions=8, samples=3, out=str(again))
    )
    assert again.read_text() == out.read_text()  # same seed, same answers, same ids


def test_simulated_annotators_follow_ground_truth_with_the_error_rate(sampled_answers, synthetic_data, tmp_path):
    out, _ = sampled_answers
    records = read_answers(out)
    truth = {r["question_id"]: r for r in load_vqa(synthetic_data, "train2014")}
    # The tiny untrained model is rarely right: give half the records the human answer, so both verdicts occur.
    records = [
        dict(r, answer=truth[r["question_id"]]["multiple_choice_answer"]) if i % 2 else r for i, r in enumerate(records)
    ]
    true = {
        r["answer_id"]: "correct"
        if vqa_accuracy(r["answer"], truth[r["question_id"]]["answers"]) >= 0.5
        else "incorrect"
        for r in records
    }
    assert set(true.values()) == {"correct", "incorrect"}

    perfect = simulated_labels(records, truth, SimulateConfig(error_rate=0.0, annotators=3, per_answer=2))
    assert len(perfect) == 2 * len(records)
    assert all(row["verdict"] == true[row["answer_id"]] for row in perfect)
    assert all(row["source"] == "simulated" for row in perfect)
    for answer in true:
        assert len({row["annotator"] for row in perfect if row["answer_id"] == answer}) == 2
    wrong = [r for r in perfect if r["verdict"] == "incorrect"]
    assert all(r["corrected_answer"] == truth[r["question_id"]]["multiple_choice_answer"] for r in wrong)

    # The error rate, measured over many draws (distinct seeds).
    flips = total = 0
    for seed in range(40):
        rows = simulated_labels(records, truth, SimulateConfig(error_rate=0.3, annotators=3, per_answer=3, seed=seed))
        flips += sum(row["verdict"] != true[row["answer_id"]] for row in rows)
        total += len(rows)
    assert 0.25 < flips / total < 0.35

    with pytest.raises(ValueError, match="per_answer must be between 1 and annotators"):
        simulated_labels(records, truth, SimulateConfig(annotators=2, per_answer=3))


def test_simulate_command_is_idempotent(sampled_answers, tmp_path):
    out, _ = sampled_answers
    cfg = SimulateConfig(answers=str(out), store=str(tmp_path / "labels"), per_answer=2, error_rate=0.1)
    first = simulate(cfg)
    assert first["stored"] == first["labels"] == 2 * first["answers"]
    assert simulate(cfg)["stored"] == 0
    cfg.error_rate = 0.5  # other settings: changed verdicts become new versions, history kept
    changed = simulate(cfg)["stored"]
    rows = LabelStore(cfg.store).rows()
    assert len(rows) == first["labels"] + changed and changed > 0
    assert max(r["version"] for r in rows) == 2


def test_generate_refuses_to_overwrite_answers_unless_told(
    sampled_answers, tiny_checkpoint, synthetic_data, tmp_path, capsys
):
    from vlm.cli import main
    from vlm.labels.gold import gold_key_path

    out = tmp_path / "answers.jsonl"
    written = sampled_answers[0].read_text()  # answers written (and maybe pushed) before, with their gold key
    out.write_text(written)
    gold = gold_key_path(out)
    gold.write_text('{"answer_id": "stale", "expected": "correct"}\n')
    argv = ["label", "generate", "--model", str(tiny_checkpoint), "--data", str(synthetic_data), "--questions", "2"]
    argv += ["--samples", "1", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out} already exists" in err[0] and "--overwrite true" in err[0], err
    assert out.read_text() == written and gold.is_file()  # nothing touched

    assert main(argv + ["--overwrite", "true"]) == 0
    assert json.loads(capsys.readouterr().out)["answers"] == len(read_answers(out)) <= 2
    assert not gold.exists()  # the stale key of the answers it replaced is gone


def _jwt(payload: dict) -> str:
    import base64

    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(payload)}.c2lnbmF0dXJl"


@pytest.mark.parametrize("payload", [{"token_type": "refresh", "user_id": 1}, {"token_type": "refresh", "exp": 1}])
def test_a_jwt_key_without_or_past_expiry_is_a_clean_refusal(payload, tmp_path, capsys, monkeypatch):
    """The SDK rejects such a key in its client's constructor, before any request: no server needed."""
    from labeling.label_studio_server import free_port
    from vlm.cli import main

    key = _jwt(payload)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", key)
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["label", "pull", "--url", url, "--project", "answers", "--store", str(tmp_path / "labels")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and f"Label Studio at {url} refused the API key" in err[0], err
    assert "LABEL_STUDIO_API_KEY" in err[0] and key not in captured.err + captured.out
