"""Demo logic without a browser: upload confinement, loading, streaming, views; both endpoints via gradio_client."""
from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from avcot.traces import AVCoTTrace, render_avcot
from avcot.data.clips import MediaSettings
from demo.inference import (
    ClipError, ClipMedia, DemoSettings, black_out, clean_options, load_clip, partial_trace, qa_result,
    stream_text, transcription_result,
)
from demo.runtime import ModelLoadError, load_model
from demo.safety import (
    UploadDir, UploadError, UploadPolicy, check_request_value, check_size, request_files, resolve_inside,
    validate_upload,
)
from demo.views import answer_segments, change_segments, load_examples, transcription_view

SYNTH = Path(__file__).parent / "data" / "synth"
BAD = Path(__file__).parent / "data" / "bad"
CLIP = SYNTH / "clips" / "synth-s0-0000.mp4"


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


@pytest.fixture
def uploads(tmp_path):
    with UploadDir(tmp_path) as d:
        yield d.path


@pytest.fixture
def policy(uploads):
    return UploadPolicy(roots=(uploads, SYNTH))


def _png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    return path


# ---------------------------------------------------------------- confinement and type checks


def test_path_traversal_out_of_the_upload_dir_is_refused(uploads, policy):
    sneaky = uploads / ".." / ".." / ".." / ".." / "etc" / "passwd"
    with pytest.raises(UploadError, match="only files uploaded to this demo"):
        validate_upload(str(sneaky), "video", policy)
    with pytest.raises(UploadError, match="refusing to read 'passwd': only files uploaded"):
        validate_upload("/etc/passwd", "video", policy)


def test_symlink_inside_the_upload_dir_pointing_outside_is_refused(uploads, policy, tmp_path):
    outside = tmp_path / "outside.mp4"
    shutil.copy(CLIP, outside)
    (uploads / "link.mp4").symlink_to(outside)
    with pytest.raises(UploadError, match="only files uploaded"):
        validate_upload(uploads / "link.mp4", "video", policy)


def test_files_in_the_upload_dir_and_examples_dir_are_accepted(uploads, policy):
    copy = uploads / "clip.mp4"
    shutil.copy(CLIP, copy)
    assert validate_upload(str(copy), "video", policy) == copy.resolve()
    assert validate_upload(CLIP, "video", policy) == CLIP.resolve()
    assert validate_upload(_png(uploads / "x.png"), "image", policy) == (uploads / "x.png").resolve()
    assert validate_upload(SYNTH / "clips" / "synth-s0-0000.wav", "audio", policy).suffix == ".wav"


def test_request_files_finds_every_file_reference_at_any_depth():
    value = {"video": {"path": "/a/x.mp4", "meta": {"_type": "gradio.FileData"}},
             "subtitles": None, "more": [{"path": "b.srt"}, ("c", {"url": "u", "path": None})]}
    assert sorted(request_files(value)) == ["/a/x.mp4", "b.srt"]
    assert request_files("plain text") == [] and request_files(None) == []
    with pytest.raises(UploadError, match="'path' must be a string"):
        request_files({"path": 3})


def test_a_request_naming_a_file_outside_the_upload_dir_is_refused_without_server_paths(uploads, tmp_path):
    policy = UploadPolicy(roots=(uploads,))
    outside = tmp_path / "elsewhere" / "clip.mp4"
    outside.parent.mkdir()
    shutil.copy(CLIP, outside)
    (uploads / "link.mp4").symlink_to(outside)
    for path in (outside, "/etc/passwd", CLIP, "http://127.0.0.1:9/x.mp4", uploads / ".." / "x.mp4",
                 uploads / "link.mp4", "clip.mp4", "~/clip.mp4"):
        with pytest.raises(UploadError, match="only files uploaded to this demo") as e:
            check_request_value({"video": {"path": str(path)}, "subtitles": None}, "video", policy)
        assert "/" not in str(e.value)  # the base name only, never a server path
    inside = uploads / "up" / "clip.mp4"
    inside.parent.mkdir()
    shutil.copy(CLIP, inside)
    check_request_value({"video": {"path": str(inside)}}, "video", policy)
    check_request_value("a reference transcript", None, policy)
    with pytest.raises(UploadError, match="this input does not take files"):
        check_request_value({"path": str(inside)}, None, policy)
    with pytest.raises(UploadError, match="not an accepted image file"):
        check_request_value({"path": str(inside)}, "image", policy)


def test_wrong_extension_is_refused_before_probing(uploads, policy):
    text = uploads / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UploadError, match=r"not an accepted video file: expected one of .avi, .mkv"):
        validate_upload(text, "video", policy)
    with pytest.raises(UploadError, match="not an accepted audio file"):
        validate_upload(CLIP, "audio", policy)


def test_content_is_probed_not_just_the_extension(uploads, policy):
    fake = uploads / "fake.mp4"
    shutil.copy(BAD / "not_a_video.mp4", fake)
    with pytest.raises(UploadError, match="could not be read as video"):
        validate_upload(fake, "video", policy)
    wav_as_mp4 = uploads / "sound.mp4"
    shutil.copy(SYNTH / "clips" / "synth-s0-0000.wav", wav_as_mp4)
    with pytest.raises(UploadError, match="has no video stream"):
        validate_upload(wav_as_mp4, "video", policy)
    fake_png = uploads / "fake.png"
    fake_png.write_text("not an image")
    with pytest.raises(UploadError, match="could not be read as an image"):
        validate_upload(fake_png, "image", policy)


def test_oversize_and_empty_files_are_refused(uploads):
    big = uploads / "big.mp4"
    big.write_bytes(b"\0" * 3000)
    with pytest.raises(UploadError, match="limit is 0 MB"):
        check_size(big, 2999)
    check_size(big, 3000)  # exactly at the limit is fine
    policy = UploadPolicy(roots=(uploads,), max_bytes=2999)
    with pytest.raises(UploadError, match="is 0.0 MB"):
        validate_upload(big, "video", policy)
    empty = uploads / "empty.mp4"
    empty.touch()
    with pytest.raises(UploadError, match="is empty"):
        validate_upload(empty, "video", UploadPolicy(roots=(uploads,)))


def test_missing_file_and_no_file(uploads):
    with pytest.raises(UploadError, match="does not exist"):
        resolve_inside(uploads / "gone.mp4", (uploads,))
    with pytest.raises(UploadError, match="please upload a video"):
        validate_upload(None, "video", UploadPolicy(roots=(uploads,)))


def test_upload_dir_is_removed_on_cleanup(tmp_path):
    d = UploadDir(tmp_path)
    (d.path / "a.mp4").write_bytes(b"x")
    d.cleanup()
    assert not d.path.exists()
    d.cleanup()  # idempotent


# ---------------------------------------------------------------- model loading


def test_bad_base_path_gives_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"cannot load base model '/nonexistent/ckpt'.*no such directory"):
        load_model("/nonexistent/ckpt")


def test_adapter_passed_as_base_gets_a_hint(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="pass it with --adapter"):
        load_model(str(tmp_path))


def test_bad_adapter_path_gives_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot load LoRA adapter .* does not exist"):
        load_model("tiny", str(tmp_path / "missing"))


def test_tiny_and_adapter_descriptions(tiny, tmp_path):
    from avcot.model import LoraSettings, apply_lora, load_thinker

    assert tiny.is_tiny and tiny.description == "Loaded: embedded tiny thinker (random weights)"
    apply_lora(load_thinker("tiny"), LoraSettings()).save_pretrained(tmp_path / "ad")
    loaded = load_model("tiny", str(tmp_path / "ad"))
    assert loaded.description.endswith(f"+ LoRA adapter `{tmp_path / 'ad'}`")
    assert type(loaded.model).__name__ == "PeftModel" and not loaded.model.training


# ---------------------------------------------------------------- parsing partial output

TRACE = render_avcot(AVCoTTrace("背景牌子写着实验室", "zhe4 ci4 shi2 yan4", "画面是实验室，所以是实验", "这次实验"))


def test_partial_trace_fills_fields_in_order():
    cut_cues = TRACE.index("Acoustic Analysis:")
    head, done = partial_trace(TRACE[:cut_cues + len("Acoustic Analysis:\nzhe4")])
    assert not done
    assert (head.visual_cues, head.acoustic_pinyin, head.reasoning, head.transcription) == (
        "背景牌子写着实验室", "zhe4", "", "")
    early, _ = partial_trace("Multimodal Perceive:\nVisual Cues:\n背景")
    assert early.visual_cues == "背景" and early.transcription == ""
    full, done = partial_trace(TRACE)
    assert done and full.transcription == "这次实验" and full.reasoning == "画面是实验室，所以是实验"


def test_transcription_result_scores_cer_only_when_done():
    wrong = TRACE.replace("Transcription:\n这次实验", "Transcription:\n这次试验")
    partial = transcription_result(wrong, done=False, reference="这次实验")
    assert partial.cer is None and partial.well_formed
    final = transcription_result(wrong, done=True, reference="这次实验")
    assert final.cer == pytest.approx(1 / 4)  # one substitution in four reference characters
    assert transcription_view(final).cer == "25.0%"


def test_gibberish_falls_back_to_the_last_line():
    result = transcription_result("随便\n乱码文字", done=True)
    assert not result.well_formed and result.transcription == "乱码文字"
    assert "does not follow the AV-CoT format" in transcription_view(result).status


def test_qa_result_partial_and_final():
    partial = qa_result("<think>画面里是实验室", done=False)
    assert partial.reasoning == "画面里是实验室" and partial.answer is None
    final = qa_result("<think>画面里是实验室</think><answer>C</answer>", done=True)
    assert final.reasoning == "画面里是实验室" and final.answer == "C"
    assert answer_segments(("a", "b", "c", "d"), "C") == [
        ("A. a\n", None), ("B. b\n", None), ("C. c\n", "answer"), ("D. d\n", None)]


def test_clean_options_names_the_empty_one():
    assert clean_options([" x", "y ", "z", "w"]) == ("x", "y", "z", "w")
    with pytest.raises(ValueError, match="option C is empty"):
        clean_options(["x", "y", " ", "w"])
    with pytest.raises(ValueError, match="exactly 4 options"):
        clean_options(["x", "y"])


def test_change_segments_mark_what_the_video_changed():
    assert change_segments("这次试验", "这次实验") == [
        ("这", None), ("次", None), ("实", "changed by the video"), ("验", None)]
    assert change_segments("实验了", "实验") == [("实", None), ("验", None), ("[-了]", "dropped with the video")]


def test_homophone_highlight_marks_the_word_and_keeps_the_text():
    from demo.highlight import highlight_segments

    segments = highlight_segments("这次实验的结果很重要")
    assert "".join(s for s, _ in segments) == "这次实验的结果很重要"
    marked = {s: label for s, label in segments if label}
    assert "实验" in marked and "食盐" in marked["实验"]  # shi yan: 实验 / 食盐
    assert highlight_segments("是") == [("是", None)]  # single characters are never marked


# ---------------------------------------------------------------- media and generation


def test_load_clip_and_black_out():
    media = MediaSettings(num_frames=4, frame_size=112, max_seconds=10.0)
    clip = load_clip(CLIP, media)
    assert clip.frames.shape == (4, 112, 112, 3) and clip.frames.dtype == np.uint8
    duration = json.loads((SYNTH / "manifest.jsonl").read_text().splitlines()[0])["duration_s"]
    assert abs(len(clip.audio) / 16000 - duration) < 0.1
    assert clip.fps == pytest.approx(4 / duration, rel=0.05)
    black = black_out(clip)
    assert black.frames.max() == 0 and clip.frames.max() > 0 and black.audio is clip.audio


def test_video_without_audio_is_refused_for_transcription():
    with pytest.raises(ClipError, match="no readable audio track"):
        load_clip(BAD / "video_only.mp4", MediaSettings())
    assert load_clip(BAD / "video_only.mp4", MediaSettings(), need_audio=False).audio is None


def test_stream_grows_and_ends_with_the_unstreamed_greedy_text(tiny):
    from avcot.chat import collate, encode_example
    from avcot.generate import generate_texts
    from demo.inference import cavsr_prompt

    clip = ClipMedia(frames=np.full((4, 112, 112, 3), 90, np.uint8), audio=np.zeros(16000, np.float32),
                     image=None, fps=2.0)
    texts = list(stream_text(tiny, cavsr_prompt(clip), max_new_tokens=24))
    assert len(texts) >= 2
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # each update extends the previous one
    tok = tiny.processor.tokenizer
    batch = collate([encode_example(tiny.processor, cavsr_prompt(clip))], tok.pad_token_id, padding_side="left")
    assert texts[-1] == generate_texts(tiny.model, tiny.processor, batch, max_new_tokens=24)[0]


# ---------------------------------------------------------------- app wiring and endpoints


def test_cli_defaults_are_safe():
    from demo.app import parse_args

    args = parse_args([])
    assert (args.host, args.share, args.base, args.adapter, args.max_upload_mb) == (
        "127.0.0.1", False, None, None, 50.0)  # no model flag: the newest run's model, else tiny (demo.latest_run)


def test_main_with_a_bad_base_exits_2_with_a_message(capsys):
    from demo.app import main

    assert main(["--base", "/no/such/ckpt"]) == 2
    assert "cannot load base model '/no/such/ckpt'" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny, tmp_path_factory):
    """The app launched in-process on 127.0.0.1 with a 1 MB upload limit."""
    from demo.app import build_app, launch

    uploads = UploadDir(tmp_path_factory.mktemp("uploads"))
    old_tmp = os.environ.get("GRADIO_TEMP_DIR")  # build_app points Gradio's cache at the upload dir
    app = build_app(tiny, uploads.path, examples_dir=SYNTH, max_upload_mb=1,
                    media=DemoSettings(max_new_tokens=24))
    _, url, _ = launch(app, port=_free_port(), max_upload_mb=1, prevent_thread_lock=True)
    yield app, url, uploads.path
    app.close()
    uploads.cleanup()
    if old_tmp is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = old_tmp


def test_server_binds_loopback(served):
    app, url, _ = served
    assert url.startswith("http://127.0.0.1:") and app.server_name == "127.0.0.1"
    assert app.share_url is None


def test_transcribe_endpoint(served):
    from gradio_client import Client, handle_file

    _, url, uploads = served
    out = Client(url, verbose=False).predict(handle_file(str(CLIP)), "这次实验的结果很重要", True,
                                            api_name="/transcribe")
    status, cues, pinyin, reasoning, text, marks, cer, raw, ao_text, changes, ao_cer = out
    assert status.startswith("audio-only run: done") and raw.strip()
    assert text == transcription_result(raw, done=True).transcription != ""
    assert cer.endswith("%") and ao_cer.endswith("%")
    assert "".join(m["token"] for m in marks) == text
    assert any(uploads in p.parents for p in uploads.rglob("*.mp4"))  # the upload landed in our dir


def test_qa_endpoint_with_video_and_with_image_plus_audio(served, tmp_path):
    from gradio_client import Client, handle_file

    _, url, _ = served
    status, reasoning, answer, raw = Client(url, verbose=False).predict(
        handle_file(str(CLIP)), None, None, "画面中的标志写的是哪个词？", "实验", "权利", "试验", "市场",
        api_name="/qa")
    assert status.startswith("done") and raw.strip()
    assert [seg["token"] for seg in answer] == ["A. 实验\n", "B. 权利\n", "C. 试验\n", "D. 市场\n"]
    image = _png(tmp_path / "still.png")
    status, _, answer, raw = Client(url, verbose=False).predict(
        None, handle_file(str(image)), handle_file(str(SYNTH / "clips" / "synth-s0-0000.wav")), "说的是哪个词？",
        "a", "b", "c", "d", api_name="/qa")
    assert status.startswith("done") and raw.strip() and len(answer) == 4


def test_wrong_file_type_is_an_error_message_not_a_crash(served):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    _, url, _ = served
    client = Client(url, verbose=False)
    with pytest.raises(AppError, match="'manifest.jsonl' is not an accepted video file"):
        client.predict(handle_file(str(SYNTH / "manifest.jsonl")), "", False, api_name="/transcribe")
    with pytest.raises(AppError, match="could not be read as video"):
        client.predict(handle_file(str(BAD / "not_a_video.mp4")), "", False, api_name="/transcribe")
    with pytest.raises(AppError, match="option B is empty"):
        client.predict(handle_file(str(CLIP)), None, None, "q", "a", "", "c", "d", api_name="/qa")


def _raw_call(url: str, api: str, data: list) -> tuple[str, dict]:
    """POST `data` as is to the app's HTTP API (no client-side upload) and return the final (event, payload)."""
    import httpx

    r = httpx.post(f"{url.rstrip('/')}/gradio_api/call/{api}", json={"data": data}, timeout=60)
    r.raise_for_status()
    stream = httpx.get(f"{url.rstrip('/')}/gradio_api/call/{api}/{r.json()['event_id']}", timeout=120).text
    events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
    payloads = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
    return events[-1], json.loads(payloads[-1])


def _file_data(path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def test_raw_filedata_naming_a_server_path_is_refused_before_anything_is_copied(served, tmp_path):
    _, url, uploads = served
    outside = tmp_path / "clip.mp4"
    shutil.copy(CLIP, outside)
    before = sorted(uploads.rglob("*"))
    for path in (outside, "/etc/passwd", CLIP, "http://127.0.0.1:9/x.mp4", uploads / ".." / "clip.mp4"):
        for api, data in (("transcribe", [_file_data(path), "", False]),
                          ("qa", [None, _file_data(path), None, "q", "a", "b", "c", "d"])):
            event, payload = _raw_call(url, api, data)
            message = payload["error"] or ""
            assert event == "error" and "only files uploaded to this demo" in message, (api, path, payload)
            assert "/" not in message and str(tmp_path) not in json.dumps(payload)
    # a file posted to a text input is refused too (Gradio would otherwise copy it into its cache)
    event, payload = _raw_call(url, "transcribe", [None, _file_data(outside), False])
    assert event == "error" and "does not take files" in payload["error"]
    assert sorted(uploads.rglob("*")) == before  # nothing was copied into the upload dir


def test_qa_with_a_non_image_in_the_image_slot_gets_the_demos_message(served, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    _, url, _ = served
    client = Client(url, verbose=False)
    video_as_png = tmp_path / "still.png"
    shutil.copy(CLIP, video_as_png)
    text_as_png = tmp_path / "notes.png"
    text_as_png.write_text("not an image")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    for path, expected in ((video_as_png, "'still.png' could not be read as an image"),
                           (text_as_png, "'notes.png' could not be read as an image"),
                           (text, "'notes.txt' is not an accepted image file")):
        with pytest.raises(AppError, match=expected):
            client.predict(None, handle_file(str(path)), None, "q", "a", "b", "c", "d", api_name="/qa")


def test_the_served_app_reads_only_its_upload_dir(served):
    app, _, uploads = served
    assert app.avcot_policy.roots == (uploads.resolve(),)
    assert sorted(app.avcot_kinds.values()) == ["audio", "image", "video", "video"]


def test_oversize_upload_is_rejected_by_the_server(served, tmp_path):
    _, url, _ = served
    boundary = "avcotboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()
    body = head + os.urandom(2 * 1024 * 1024) + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url.rstrip("/") + "/gradio_api/upload", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 413


def test_handler_refuses_paths_outside_its_roots(tiny, tmp_path):
    import gradio as gr

    from demo.app import _transcribe_handler

    uploads = tmp_path / "up"
    uploads.mkdir()
    handler = _transcribe_handler(tiny, UploadPolicy(roots=(uploads, SYNTH)), DemoSettings(max_new_tokens=4))
    for path in (str(uploads / ".." / ".." / "etc" / "passwd"), "/etc/hostname", str(SYNTH / ".." / "bad" / "x.mp4")):
        with pytest.raises(gr.Error, match="only files uploaded to this demo"):
            next(handler(path, "", False))


def test_examples_come_from_the_manifest():
    examples = load_examples(SYNTH)
    first = json.loads((SYNTH / "manifest.jsonl").read_text().splitlines()[0])
    assert examples[0].video == SYNTH / first["video"] and examples[0].reference == first["text"]
    assert any(len(e.options) == 4 and e.question for e in examples)
    assert load_examples(None) == [] and load_examples(SYNTH / "clips") == []


@pytest.mark.slow
def test_cli_serves_on_loopback_and_removes_its_upload_dir_on_sigterm(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the upload dir is created under TMPDIR
    proc = subprocess.Popen([sys.executable, "-m", "demo.app", "--port", str(port)], env=env,
                            cwd=Path(__file__).parent.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("demo did not start within 180 s")
        assert len(list(tmp_path.glob("avcot-demo-*"))) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(tmp_path.glob("avcot-demo-*")) == []
