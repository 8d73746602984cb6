"""End to end: the demo served on 127.0.0.1, driven by headless Chromium through Playwright.

Uses the system Chromium (`/usr/bin/chromium`, apt-installed by scripts/setup.sh); Playwright's own
browser download is never used. Every request that is not to the local server is aborted, so a page
asset from a CDN cannot make the test hang.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SYNTH = Path(__file__).parent / "data" / "synth"
CLIP = SYNTH / "clips" / "synth-s0-0000.mp4"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="system Chromium missing: apt-get install -y chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from demo.app import build_app, launch
    from demo.inference import DemoSettings
    from demo.runtime import load_model
    from demo.safety import UploadDir

    uploads = UploadDir(tmp_path_factory.mktemp("uploads"))
    old_tmp = os.environ.get("GRADIO_TEMP_DIR")
    app = build_app(load_model("tiny"), uploads.path, examples_dir=SYNTH, max_upload_mb=1,
                    media=DemoSettings(max_new_tokens=32))
    _, url, _ = launch(app, port=_free_port(), max_upload_mb=1, prevent_thread_lock=True)
    yield url
    app.close()
    uploads.cleanup()
    if old_tmp is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = old_tmp


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(60_000)
        outside: list[str] = []

        def local_only(route) -> None:
            url = route.request.url
            if url.startswith((server, "blob:", "data:")):
                route.continue_()
            else:
                outside.append(url)
                route.abort()

        pg.route("**/*", local_only)
        pg.goto(server, wait_until="domcontentloaded")
        pg.wait_for_selector("#tr-run")
        yield pg
        browser.close()


def _upload(page, path: Path) -> None:
    page.locator("#tr-video input[type=file]").set_input_files(str(path))
    page.wait_for_timeout(1000)  # the upload goes to the server before the click may use it


def _toast_with(page, text: str) -> str:
    """Wait for an error toast containing `text` (the browser may first add its own, e.g. 'Video not playable')."""
    toast = page.locator("[data-testid='toast-body']", has_text=text)
    toast.first.wait_for(timeout=30_000)
    return toast.first.inner_text()


def test_transcribe_a_fixture_clip_end_to_end(page, tmp_path):
    assert "embedded tiny" in page.locator("#tiny-banner").inner_text()
    _upload(page, CLIP)
    page.locator("#tr-reference textarea").fill("这次实验的结果很重要")
    page.locator("#tr-run").click()
    page.wait_for_function(
        "() => document.querySelector('#tr-status textarea')?.value.startsWith('done')")
    text = page.locator("#tr-transcription textarea").input_value()
    page.get_by_text("Raw model output").first.click()  # closed accordion: its content renders on open
    raw = page.locator("#tr-raw textarea").input_value()
    assert text and raw and text in raw  # gibberish from the random model, but shown and taken from the output
    assert page.locator("#tr-cer textarea").input_value().endswith("%")
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_wrong_file_type_shows_an_error_not_a_crash(page):
    bad = Path(__file__).parent / "data" / "bad" / "not_a_video.mp4"
    _upload(page, bad)
    page.locator("#tr-run").click()
    assert "cannot open as media" in _toast_with(page, "'not_a_video.mp4' could not be read as video")
    assert page.locator("#tr-run").is_enabled()  # the app is still there and usable


def test_oversize_upload_is_rejected_in_the_browser(page, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(2 * 1024 * 1024))
    _upload(page, big)
    assert '"big.mp4"' in _toast_with(page, "exceed the maximum allowed size of 1.0 Mb")


def test_a_bundled_example_runs_from_the_upload_dir(page):
    import json

    # The examples are served from Gradio's copies in the upload dir, the only folder the app reads.
    reference = json.loads((SYNTH / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[0])["text"]
    page.get_by_text(reference, exact=True).first.click()
    page.wait_for_function(
        f"() => document.querySelector('#tr-reference textarea')?.value === {json.dumps(reference)}")
    page.wait_for_timeout(1000)
    page.locator("#tr-run").click()
    page.wait_for_function(
        "() => document.querySelector('#tr-status textarea')?.value.startsWith('done')")
    assert page.locator("#tr-cer textarea").input_value().endswith("%")
