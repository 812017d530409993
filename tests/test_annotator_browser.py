"""Annotators as people work: a real headless Chromium logs in to a real Label Studio, reads the instructions,
waits for the image, presses the hotkeys, types a correction and submits; `label pull` then holds those verdicts.

Two annotators log in through Label Studio's login page, the first sees the project's instructions, each opens a
pushed task, waits until its image has actually rendered (local-files serving), presses `1`, `3`, or `2` and types a
correction, and submits; `label pull` then holds exactly those verdicts with their annotators. Screenshots of the
instructions and of the labeling view are kept in `test-artifacts/`.

Chromium comes from Debian (`make test` installs it); Playwright drives it, never downloading a browser of its own.
Without Chromium the test fails saying how to install it; it is never skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from label_studio_helpers import ANNOTATORS
from label_studio_sdk import LabelStudio

from labeling.generate import GenerateConfig, generate
from labeling.pull import PullConfig, pull
from labeling.push import PushConfig, push
from vlm.labels.store import LabelStore

CHROMIUM = Path(os.environ.get("VLM_RLHF_CHROMIUM", "/usr/bin/chromium"))
# Without these, Chromium's background connections fail loudly on a machine without outside network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("VLM_RLHF_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
PROJECT = "browser labeling"
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: `make test` installs Debian's chromium package "
            "(apt-get install chromium); set VLM_RLHF_CHROMIUM to use another build"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _log_in(browser, url: str, email: str):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{url}/user/login/")
    page.locator("#email").fill(email)
    page.locator("#password").fill(ANNOTATORS[email])
    page.get_by_role("button", name="Log In").click()
    page.wait_for_url(lambda u: "/user/login" not in u)
    return page


def _label(page, url, project_id: int, task_id: int, hotkey: str, correction: str | None = None, screenshot=None):
    """Open one task as an annotator would, wait until its image has really rendered, then judge and submit."""
    from playwright.sync_api import expect

    page.goto(f"{url}/projects/{project_id}/data?task={task_id}")
    view = page.locator(".lsf-main-view")
    image = view.get_by_role("img", name="image")
    expect(image).to_be_visible(timeout=WAIT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=WAIT_MS)
    submit = page.get_by_role("button", name="Submit current annotation")
    if not submit.is_visible():  # the task shows someone else's annotation: start one of our own, as people do
        page.get_by_role("button", name="Create an annotation").click()
        expect(submit).to_be_visible()
    page.keyboard.press(hotkey)  # before any text box has the focus, or the key would be typed into it
    if correction:
        view.get_by_role("textbox", name="TextArea Input").fill(correction)
    if screenshot:
        page.screenshot(path=str(screenshot))
    submit.click()


def _annotations(client, task_id: int) -> list:
    return [a for a in client.annotations.list(id=task_id) if not a.was_cancelled]


def test_annotators_label_in_a_real_browser(browser, label_studio, tiny_checkpoint, synthetic_data, tmp_path):
    answers = tmp_path / "answers.jsonl"
    generate(
        GenerateConfig(model=str(tiny_checkpoint), data=str(synthetic_data), questions=3, samples=1, out=str(answers))
    )
    pushed = push(
        PushConfig(
            url=label_studio.url,
            project=PROJECT,
            api_key=label_studio.api_key,
            answers=str(answers),
            document_root=str(synthetic_data),
        )
    )
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key)
    tasks = sorted(t.id for t in client.tasks.list(project=pushed["project_id"], page_size=10))
    assert len(tasks) >= 2

    # Annotator 1 opens the labeling stream first and is shown the project's instructions.
    first = _log_in(browser, label_studio.url, "ann1@example.com")
    first.goto(f"{label_studio.url}/projects/{pushed['project_id']}/data?labeling=1")
    from playwright.sync_api import expect

    instructions = first.get_by_text("Labeling Instructions")
    expect(instructions).to_be_visible(timeout=WAIT_MS)
    for text in ("Is the model's answer to the question about this image correct?", "3 — unsure", "type it"):
        expect(first.get_by_text(text, exact=False).first).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    first.screenshot(path=str(ARTIFACTS / "label-studio-instructions.png"))
    first.keyboard.press("Escape")

    _label(first, label_studio.url, pushed["project_id"], tasks[0], "1")
    _label(first, label_studio.url, pushed["project_id"], tasks[1], "3")
    second = _log_in(browser, label_studio.url, "ann2@example.com")
    view = ARTIFACTS / "label-studio-labeling-view.png"
    _label(second, label_studio.url, pushed["project_id"], tasks[0], "2", correction="blue", screenshot=view)

    for task_id, count in {tasks[0]: 2, tasks[1]: 1}.items():  # submits are asynchronous: wait for the server
        for _ in range(60):
            if len(_annotations(client, task_id)) >= count:
                break
            first.wait_for_timeout(500)

    store = tmp_path / "labels"
    pull(PullConfig(url=label_studio.url, project=PROJECT, api_key=label_studio.api_key, store=str(store)))
    got = {(r["task_id"], r["annotator"]): (r["verdict"], r["corrected_answer"]) for r in LabelStore(store).latest()}
    assert got == {
        (tasks[0], "ann1@example.com"): ("correct", None),
        (tasks[1], "ann1@example.com"): ("unsure", None),
        (tasks[0], "ann2@example.com"): ("incorrect", "blue"),
    }
    assert view.stat().st_size > 10_000
