"""Stage 2 against a REAL Label Studio server (no mocks): push, human-made annotations, pull, bad input, serve.

The fixture installs the server if missing, initialises one state dir per session (an admin plus two annotators who
sign up through the invite link, as people do) and gives each test a copy on a free 127.0.0.1 port, stopped by PID.
Push -> three annotators label through the API with their own tokens (a disagreement, an unsure, a corrected
answer) -> pull: the store holds exactly those verdicts and annotators, the image is served as a local file byte for
byte, a second push and a second pull change nothing, and an annotator's changed verdict becomes version 2 with
version 1 kept. Pre-annotations carry `model_version` and the right score. Gold answers pushed with `--gold_rate
0.5` carry exactly the fields of the other tasks and no trace of their key, a second push creates nothing, and after
one annotator labels every gold answer right and the other every one wrong, `labels stats --gold` gives them gold
accuracy 1.0 and 0.0, agreement 0 and their median lead times. Images can be embedded instead. The server killed
after the second page of a pull -> a clear error, two intact rows, and a pull from the restarted server completes
without duplicates. A missing image (nothing created), an unknown verdict (the readable labels stored, the bad one
named), a foreign project (refused by push and pull). A personal access token and the legacy token both work, a
wrong key and a closed port give clear errors, and no key appears in any output, log or store file. `label serve`
starts, prints how to log in without the key (its key-export line works with no `python` on PATH), and stops on
SIGTERM; a busy port is refused before anything starts, Label Studio moving off a port taken meanwhile is caught and
stopped, and another server on the port is told apart from ours. The server's command line holds neither secret and
its state dir is 0700. The pipeline pushes, stops until people have labelled, then pulls on the re-run.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
import yaml
from label_studio_helpers import verdict_result
from label_studio_sdk import LabelStudio

from labeling.client import LabelStudioError
from labeling.generate import GenerateConfig, generate
from labeling.label_studio_server import LabelStudioServer, free_port
from labeling.pull import PullConfig, pull
from labeling.push import PushConfig, push
from vlm.cli import main
from vlm.data.errors import DataError
from vlm.labels.answers import read_answers, write_answers
from vlm.labels.gold import gold_key_path, read_gold
from vlm.labels.store import LabelStore, aggregate_verdicts, label_stats

PROJECT = "correctness test"


@pytest.fixture
def answers_file(tiny_checkpoint, synthetic_data, tmp_path):
    out = tmp_path / "answers.jsonl"
    generate(
        GenerateConfig(
            model=str(tiny_checkpoint), data=str(synthetic_data), questions=4, samples=2, out=str(out), seed=1
        )
    )
    return out


def _push(server, answers, **kw) -> dict:
    return push(
        PushConfig(
            url=server.url,
            project=PROJECT,
            api_key=server.api_key,
            answers=str(answers),
            document_root=str(kw.pop("root")),
            **kw,
        )
    )


def _pull(server, store, **kw) -> dict:
    return pull(PullConfig(url=server.url, project=PROJECT, api_key=server.api_key, store=str(store)), **kw)


def _tasks(server) -> list[dict]:
    client = LabelStudio(base_url=server.url, api_key=server.api_key)
    project = next(p for p in client.projects.list(title=PROJECT) if p.title == PROJECT)
    return [t.dict() for t in client.tasks.list(project=project.id, page_size=100)]


def _annotate(server, who: str, task_id: int, verdict: str, corrected: str | None = None, lead_time: float = 4.0):
    """One annotator's label, made through the API with that annotator's own token (as their browser would)."""
    key = server.api_key if who == "admin" else server.annotator_tokens[who]
    client = LabelStudio(base_url=server.url, api_key=key)
    return client.annotations.create(id=task_id, result=verdict_result(verdict, corrected), lead_time=lead_time)


def test_round_trip_push_annotate_pull(label_studio, answers_file, synthetic_data, tmp_path):
    records = read_answers(answers_file)
    first = _push(label_studio, answers_file, root=synthetic_data)
    assert first["project_created"] and first["tasks_created"] == len(records) >= 4
    again = _push(label_studio, answers_file, root=synthetic_data)
    assert again["tasks_created"] == 0 and again["already_in_project"] == len(records)
    tasks = sorted(_tasks(label_studio), key=lambda t: t["id"])
    assert len(tasks) == len(records)  # the second push created no duplicate

    # Images reach Label Studio as local files, served (with auth) byte for byte.
    task = tasks[0]
    assert task["data"]["image"].startswith("/data/local-files/?d=")
    served = requests.get(
        label_studio.url + task["data"]["image"], headers={"Authorization": f"Token {label_studio.api_key}"}, timeout=30
    )
    assert served.status_code == 200
    assert served.content == open(task["data"]["image_path"], "rb").read()

    # Several annotators: a disagreement, an unsure, a corrected answer.
    a, b, c = tasks[0]["id"], tasks[1]["id"], tasks[2]["id"]
    _annotate(label_studio, "ann1@example.com", a, "correct")
    _annotate(label_studio, "ann2@example.com", a, "incorrect", lead_time=7.5)
    _annotate(label_studio, "ann1@example.com", b, "unsure")
    _annotate(label_studio, "ann2@example.com", c, "incorrect", corrected="red")
    _annotate(label_studio, "admin", c, "incorrect")

    store = tmp_path / "labels"
    summary = _pull(label_studio, store)
    assert summary["annotations"] == 5 and summary["stored"] == 5
    rows = LabelStore(store).latest()
    by_task = {(r["task_id"], r["annotator"]): r for r in rows}
    answer_of = {t["id"]: t["data"]["answer_id"] for t in tasks}
    assert {k: r["verdict"] for k, r in by_task.items()} == {
        (a, "ann1@example.com"): "correct",
        (a, "ann2@example.com"): "incorrect",
        (b, "ann1@example.com"): "unsure",
        (c, "ann2@example.com"): "incorrect",
        (c, "admin@localhost.local"): "incorrect",
    }
    assert by_task[(c, "ann2@example.com")]["corrected_answer"] == "red"
    assert by_task[(a, "ann2@example.com")]["lead_time"] == pytest.approx(7.5)
    for r in rows:
        assert r["answer_id"] == answer_of[r["task_id"]] and r["source"] == "label-studio" and r["version"] == 1
        assert r["question"] and r["answer"] is not None and os.path.isfile(r["image"])

    aggregated = aggregate_verdicts(rows)
    assert aggregated[answer_of[a]]["verdict"] == "unsure"  # one correct, one incorrect: a tie
    assert aggregated[answer_of[b]]["verdict"] == "unsure"
    assert aggregated[answer_of[c]]["verdict"] == "incorrect" and aggregated[answer_of[c]]["corrected_answers"] == [
        "red"
    ]

    parts = LabelStore(store).parts()
    assert _pull(label_studio, store)["stored"] == 0  # a second pull changes nothing
    assert LabelStore(store).parts() == parts and len(LabelStore(store).rows()) == 5

    # An annotator changes their mind: a new version, the old one kept.
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.annotator_tokens["ann1@example.com"])
    changed = by_task[(a, "ann1@example.com")]["annotation_id"]
    client.annotations.update(id=int(changed.rsplit("/", 1)[1]), result=verdict_result("incorrect"))
    assert _pull(label_studio, store)["stored"] == 1
    history = [r for r in LabelStore(store).rows() if r["annotation_id"] == changed]
    assert [(r["version"], r["verdict"]) for r in history] == [(1, "correct"), (2, "incorrect")]
    assert aggregate_verdicts(LabelStore(store).latest())[answer_of[a]]["verdict"] == "incorrect"


def test_push_adds_the_reward_models_guess_as_a_prediction(label_studio, answers_file, synthetic_data, tmp_path):
    records = read_answers(answers_file)
    scored = tmp_path / "scored.jsonl"
    write_answers(scored, [dict(records[0], p_correct=0.9)] + [dict(records[1], p_correct=0.25)] + records[2:])
    summary = _push(label_studio, scored, root=synthetic_data, model_version="rm-checkpoint-7")
    assert summary["predictions"] == 2 and summary["tasks_created"] == len(records)
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key)
    by_answer = {t["data"]["answer_id"]: t["id"] for t in _tasks(label_studio)}
    for record, verdict, score in ((records[0], "correct", 0.9), (records[1], "incorrect", 0.75)):
        (prediction,) = client.predictions.list(task=by_answer[record["answer_id"]])
        assert prediction.model_version == "rm-checkpoint-7" and prediction.score == pytest.approx(score)
        assert prediction.result[0]["value"] == {"choices": [verdict]}
    assert client.predictions.list(task=by_answer[records[2]["answer_id"]]) == []


def test_gold_answers_are_pushed_like_the_others_and_graded(label_studio, answers_file, synthetic_data, tmp_path):
    records = read_answers(answers_file)
    summary = _push(label_studio, answers_file, root=synthetic_data, gold_rate=0.5, seed=2)
    gold = read_gold(gold_key_path(answers_file))  # the key stays here; Label Studio never sees it
    assert summary["gold_answers"] == len(gold) == round(0.5 * len(records)) >= 2
    tasks = _tasks(label_studio)
    assert len(tasks) == len(records) + len(gold)
    assert len({frozenset(t["data"]) for t in tasks}) == 1  # gold tasks carry exactly the fields the others do
    assert not any(v in json.dumps(t["data"]) for t in tasks for v in ("gold", "expected"))
    assert _push(label_studio, answers_file, root=synthetic_data, gold_rate=0.5, seed=2)["tasks_created"] == 0
    by_answer = {t["data"]["answer_id"]: t["id"] for t in tasks}
    wrong = {"correct": "incorrect", "incorrect": "correct"}
    for answer, expected in gold.items():  # ann1 gets every gold answer right, ann2 every one wrong
        _annotate(label_studio, "ann1@example.com", by_answer[answer], expected, lead_time=3.0)
        _annotate(label_studio, "ann2@example.com", by_answer[answer], wrong[expected], lead_time=9.0)
    _pull(label_studio, tmp_path / "store")
    assert (
        main(["labels", "stats", "--store", str(tmp_path / "store"), "--gold", str(gold_key_path(answers_file))]) == 0
    )
    stats = label_stats(LabelStore(tmp_path / "store").latest(), gold)
    quality = stats["annotator_quality"]
    ann1, ann2 = (next(q for who, q in quality.items() if name in who) for name in ("ann1", "ann2"))
    assert ann1["gold_accuracy"] == 1.0 and ann2["gold_accuracy"] == 0.0 and ann1["agreement"] == 0.0
    assert ann1["median_lead_time"] == pytest.approx(3.0) and ann2["median_lead_time"] == pytest.approx(9.0)


def test_push_can_embed_images_instead(label_studio, answers_file, tmp_path):
    summary = push(
        PushConfig(
            url=label_studio.url,
            project="embedded images",
            api_key=label_studio.api_key,
            answers=str(answers_file),
            images="base64",
        )
    )
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key)
    tasks = [t.dict() for t in client.tasks.list(project=summary["project_id"], page_size=100)]
    assert len(tasks) == summary["tasks_created"] > 0
    for task in tasks:
        header, payload = task["data"]["image"].split(",", 1)
        assert header == "data:image/jpeg;base64"
        assert base64.b64decode(payload) == open(task["data"]["image_path"], "rb").read()


def test_pull_survives_the_server_dying_midway(label_studio, answers_file, synthetic_data, tmp_path):
    """The server killed after the second page of a pull: a clear error, two intact rows, and a pull from the
    restarted server completes without duplicates."""
    _push(label_studio, answers_file, root=synthetic_data)
    tasks = sorted(_tasks(label_studio), key=lambda t: t["id"])
    for t in tasks:
        _annotate(label_studio, "ann1@example.com", t["id"], "correct")

    def kill_after_second_page(page: int):
        if page == 2:
            label_studio.stop()

    store = tmp_path / "labels"
    with pytest.raises(LabelStudioError, match="cannot reach Label Studio.*labels pulled so far are kept"):
        pull(
            PullConfig(
                url=label_studio.url, project=PROJECT, api_key=label_studio.api_key, store=str(store), page_size=1
            ),
            after_page=kill_after_second_page,
        )
    kept = LabelStore(store).rows()
    assert len(kept) == 2  # the two pages pulled before the server died, intact
    assert not list(store.glob(".*.tmp"))

    restarted = LabelStudioServer(label_studio.state_dir, document_root=synthetic_data).start()
    try:
        summary = pull(PullConfig(url=restarted.url, project=PROJECT, api_key=restarted.api_key, store=str(store)))
    finally:
        restarted.stop()
    assert summary["stored"] == len(tasks) - 2
    rows = LabelStore(store).rows()
    assert len(rows) == len(tasks) == len({r["annotation_id"] for r in rows})


def test_bad_input_is_refused_and_nothing_is_lost(label_studio, answers_file, synthetic_data, tmp_path):
    # A record whose image file is missing: refused before anything reaches the server.
    records = read_answers(answers_file)
    broken = tmp_path / "broken.jsonl"
    write_answers(broken, records[:1] + [dict(records[1], image=str(tmp_path / "gone.jpg"))])
    with pytest.raises(DataError, match=r"broken.jsonl: record 2 \(answer .*\): image .*gone.jpg not found"):
        _push(label_studio, broken, root=synthetic_data)
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key)
    assert [p for p in client.projects.list() if p.title == PROJECT] == []

    # An unknown verdict: every readable label is stored, the bad one named.
    _push(label_studio, answers_file, root=synthetic_data)
    tasks = sorted(_tasks(label_studio), key=lambda t: t["id"])
    _annotate(label_studio, "ann1@example.com", tasks[0]["id"], "correct")
    bad = _annotate(label_studio, "ann2@example.com", tasks[1]["id"], "maybe")
    store = tmp_path / "labels"
    with pytest.raises(DataError, match=rf"task {tasks[1]['id']} annotation {bad.id}: unknown verdict 'maybe'"):
        _pull(label_studio, store)
    assert [r["verdict"] for r in LabelStore(store).rows()] == ["correct"]

    # A project whose labeling config is not ours: refused by push and by pull.
    client.projects.create(title="someone else's", label_config='<View><Text name="t" value="$text"/></View>')
    other = PushConfig(url=label_studio.url, project="someone else's", api_key=label_studio.api_key)
    with pytest.raises(LabelStudioError, match="not a vlm-rlhf correctness project.*no <Choices"):
        push(PushConfig(**{**vars(other), "answers": str(answers_file), "document_root": str(synthetic_data)}))
    with pytest.raises(LabelStudioError, match="not a vlm-rlhf correctness project"):
        pull(PullConfig(url=label_studio.url, project="someone else's", api_key=label_studio.api_key, store=str(store)))
    assert [r["verdict"] for r in LabelStore(store).rows()] == ["correct"]


def test_keys_never_printed_and_both_token_kinds_work(
    label_studio, answers_file, synthetic_data, tmp_path, capsys, caplog, monkeypatch
):
    # A personal access token (a JWT the SDK exchanges for access tokens) works like the legacy token.
    admin = LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key)
    pat = admin.tokens.create().token
    assert pat.count(".") == 2 and pat != label_studio.api_key
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", pat)
    argv = ["label", "push", "--url", label_studio.url, "--project", PROJECT, "--document_root", str(synthetic_data)]
    assert main(argv + [str(answers_file)]) == 0
    assert json.loads(capsys.readouterr().out)["tasks_created"] == len(read_answers(answers_file))
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.api_key)
    store = tmp_path / "labels"
    assert main(["label", "pull", "--url", label_studio.url, "--project", PROJECT, "--store", str(store)]) == 0
    out = capsys.readouterr()

    # A wrong key, and a server that is not there: clear errors, exit code 2, the key nowhere.
    wrong = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", wrong)
    assert main(["label", "pull", "--url", label_studio.url, "--project", PROJECT, "--store", str(store)]) == 2
    refused = capsys.readouterr()
    assert "refused the API key" in refused.err and "LABEL_STUDIO_API_KEY" in refused.err
    closed = f"http://127.0.0.1:{free_port()}"
    assert main(["label", "pull", "--url", closed, "--project", PROJECT, "--store", str(store)]) == 2
    unreachable = capsys.readouterr()
    assert f"cannot reach Label Studio at {closed}" in unreachable.err
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (pat, label_studio.api_key, wrong):
        for text in (out.out, out.err, refused.out, refused.err, unreachable.out, unreachable.err, logged):
            assert secret not in text
        assert all(secret not in p.read_text() for p in LabelStore(store).parts())


def test_serve_starts_prints_how_to_log_in_and_stops(label_studio_golden, synthetic_data, tmp_path):
    from labeling.label_studio_server import copy_state_dir

    state = copy_state_dir(label_studio_golden, tmp_path / "state")
    api_key = json.loads((state / "credentials.json").read_text())["api_key"]
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vlm.cli", "label", "serve", "--data_dir", str(synthetic_data)]
        + ["--state_dir", str(state), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "Ctrl-C stops it" in line or process.poll() is not None:
            break
    printed = "".join(lines)
    try:
        assert f"Label Studio is up at http://127.0.0.1:{port}" in printed
        assert "log in as admin@localhost.local with password" in printed and "LABEL_STUDIO_API_KEY" in printed
        assert api_key not in printed
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["status"] == "UP"
    finally:  # stopped whatever failed above: a server left running would outlive the test
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and "Label Studio stopped." in rest
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    # The key-export line works from a shell whose PATH has no `python` (it names the interpreter running serve).
    export = next(line for line in lines if "export LABEL_STUDIO_API_KEY=" in line)
    export = export[export.index("export ") :].strip()
    shell = subprocess.run(
        ["/bin/bash", "-c", export + '; printf %s "$LABEL_STUDIO_API_KEY"'],
        env={"PATH": str(tmp_path / "no-python-here")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.stdout == api_key, (export, shell.stderr)


def test_serve_refuses_a_busy_port(synthetic_data, tmp_path, capsys):
    import socket

    with socket.socket() as listener:  # any program listening there, say another Label Studio
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        argv = ["label", "serve", "--data_dir", str(synthetic_data), "--state_dir", str(tmp_path / "state")]
        assert main(argv + ["--port", str(port)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{port} is already in use" in err[0] and "--port" in err[0], err
    assert "is up at" not in captured.out and not (tmp_path / "state" / "server.log").exists()  # nothing started


def test_start_notices_label_studio_moving_off_a_busy_port(label_studio, label_studio_golden, tmp_path, monkeypatch):
    from labeling.label_studio_server import LabelStudioServerError, copy_state_dir

    # Past the check before starting (the port taken between the check and the start): Label Studio itself moves
    # on to the next port while the server already there answers /health. Refused, and ours is stopped.
    monkeypatch.setattr("labeling.label_studio_server.port_in_use", lambda host, port: False, raising=False)
    late = LabelStudioServer(copy_state_dir(label_studio_golden, tmp_path / "late"), port=label_studio.port)
    moved = rf"127.0.0.1:{label_studio.port} was taken before Label Studio could bind it, and .* moved on to .*\d+"
    try:
        with pytest.raises(LabelStudioServerError, match=moved):
            late.start(timeout=120)
        assert late.process.poll() is not None
    finally:
        late.stop()

    # The server answering on a port is ours when it is our admin behind this state dir's key, not another's.
    label_studio.check_identity()
    stranger = LabelStudioServer(tmp_path / "other-state", port=label_studio.port)  # other credentials, not started
    with pytest.raises(LabelStudioServerError, match=rf"127.0.0.1:{label_studio.port} is not the Label Studio"):
        stranger.check_identity()


def test_server_keeps_its_secrets_off_the_command_line_and_its_state_dir_private(label_studio_golden, tmp_path):
    import stat

    from labeling.label_studio_server import copy_state_dir, load_or_create_credentials

    fresh = tmp_path / "fresh" / "state"
    load_or_create_credentials(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700  # created owner-only: its SQLite holds the key in clear

    state = copy_state_dir(label_studio_golden, tmp_path / "state")
    state.chmod(0o755)  # a state dir made before: tightened on start
    with LabelStudioServer(state) as server:
        with open(f"/proc/{server.process.pid}/cmdline", "rb") as f:  # what any local user reads, as ps does
            seen = f.read().replace(b"\0", b" ").decode()
        assert "label-studio" in seen and "start" in seen
        for secret in (server.credentials["password"], server.api_key):
            assert secret not in seen
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        server.check_identity()  # the admin's key still works (the session's golden dir was made this way too)


def test_pipeline_pushes_to_label_studio_and_waits_for_people(label_studio, tmp_path, capsys):
    # The pipeline writes its data under tmp_path: serve local files from there.
    label_studio.stop()
    label_studio.document_root = tmp_path
    label_studio.start()
    data_cfg = tmp_path / "data.yaml"
    data_cfg.write_text("train: 20\nval: 4\nseed: 5\n")
    model_cfg = tmp_path / "model.yaml"
    model_cfg.write_text("preset: tiny\ncorpus_scenes: 200\ntext_layers: 2\n")
    sft_cfg = tmp_path / "sft.yaml"
    sft_cfg.write_text("max_steps: 2\nper_device_train_batch_size: 8\nsave_strategy: 'no'\nreport_to: none\n")
    reward_cfg = tmp_path / "reward.yaml"
    reward_cfg.write_text("max_steps: 2\nmin_labels: 4\neval_fraction: 0.5\nsave_strategy: 'no'\nreport_to: none\n")
    ppo_cfg = tmp_path / "ppo.yaml"
    ppo_cfg.write_text(
        "total_episodes: 16\nper_device_train_batch_size: 8\nnum_ppo_epochs: 1\neval_strategy: 'no'\n"
        "save_strategy: 'no'\nreport_to: none\n"
    )
    pipeline_cfg = tmp_path / "pipeline.yaml"
    pipeline_cfg.write_text("label_rounds: 1\nrl_from_sft_checkpoint: null\n")
    settings = {
        "url": label_studio.url,
        "project": PROJECT,
        "document_root": str(tmp_path),
        "api_key": label_studio.api_key,
    }
    labeling_cfg = tmp_path / "labeling.yaml"  # every answer of 8 questions, no gold: each task is one of the answers
    labeling_cfg.write_text(yaml.safe_dump({"questions": 8, "samples": 2, "label_studio": settings}))
    run = tmp_path / "run"
    argv = ["pipeline", "--config", str(pipeline_cfg), "--output_dir", str(run), "--data_config", str(data_cfg)]
    argv += ["--model_config", str(model_cfg), "--sft_config", str(sft_cfg), "--reward_config", str(reward_cfg)]
    argv += ["--ppo_config", str(ppo_cfg), "--labeling_config", str(labeling_cfg)]

    assert main(argv) == 2  # pushed; nobody has labelled yet
    assert "0 % of the" in capsys.readouterr().err
    tasks = _tasks(label_studio)
    assert len(tasks) == len(read_answers(run / "labels/round-1/answers.jsonl")) >= 8
    for i, task in enumerate(tasks):
        _annotate(label_studio, "ann1@example.com", task["id"], "correct" if i % 2 else "incorrect")

    assert main(argv) == 0  # the re-run pushes nothing new and pulls the labels
    summary = json.loads((run / "pipeline.json").read_text())
    assert summary["labels"]["source"] == "label-studio" and summary["labels"]["pushed"] == 0
    assert summary["labels"]["stats"]["by_annotator"] == {
        "ann1@example.com": {"correct": len(tasks) // 2, "incorrect": len(tasks) - len(tasks) // 2, "unsure": 0}
    }
    assert "labels (Label Studio)" in capsys.readouterr().out
