"""Gradio demo: AV-CoT transcription and audio-visual MCQ answering, streamed as they are generated.

    python -m demo.app [--base PATH_OR_TINY] [--adapter DIR] [--runs runs] [--host 127.0.0.1] [--port 7860]

With no model flags it serves the newest training run's model under `runs/` (`checkpoints/model-last` or
`adapter-last`, by modification time), decoding clips as that run was trained (its training_settings.json;
flags win), and falls back to the embedded tiny (random-init) thinker when there is none, so it always
starts; the first line it prints says which (`demo.latest_run`). The example clips ship with the package
(`avcot/assets/examples`). This module only wires Gradio to the plain functions in `demo.inference`,
`demo.latest_run`, `demo.safety` and `demo.views`.

Safety: binds 127.0.0.1 unless told otherwise, no share link unless `--share`, uploads limited in size
(Gradio's `max_file_size` and our own check) and type (extension and probed content), uploads kept in a
private temp dir removed on exit. Only files that arrived through this server's own upload route are
read: `GatedBlocks` checks every file reference in a request (a client can post a FileData naming any
server path, or a URL) before Gradio copies or opens anything, and the handlers check again.
"""
from __future__ import annotations

import argparse
import atexit
import functools
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry / version checks
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub id resolves from the local cache only

import gradio as gr  # noqa: E402

import avcot  # noqa: E402
from avcot.cli_help import DefaultsHelpFormatter  # noqa: E402
from demo.inference import (  # noqa: E402
    ClipError, DemoSettings, black_out, clean_options, load_clip, stream_qa, stream_transcription,
)
from demo.latest_run import ModelChoice, choose_model, media_overrides  # noqa: E402
from demo.runtime import TINY_BANNER, LoadedModel, ModelLoadError, load_model  # noqa: E402
from demo.safety import (  # noqa: E402
    EXTENSIONS, MB, Kind, UploadDir, UploadError, UploadPolicy, check_request_value, validate_upload,
)
from demo.views import (  # noqa: E402
    answer_segments, change_segments, load_examples, qa_status, transcription_view,
)

DEFAULT_EXAMPLES = Path(avcot.__file__).resolve().parent / "assets" / "examples"
"""Example clips shipped inside the package (package-data), so an installed copy finds them too."""
DEFAULT_MAX_NEW_TOKENS = 384
"""The tiny recipe's AV-CoT traces run to ~270 tokens; a shorter budget would cut off the transcription."""
GENERATION = "generation"  # one concurrency group: one generation at a time on the shared model


def _user_error(e: Exception) -> gr.Error:
    """A message for the user's screen (no traceback)."""
    return gr.Error(str(e), title="Cannot run this input", print_exception=False)


if not hasattr(gr.Blocks, "preprocess_data"):  # the upload gate below hooks this method
    raise ImportError(f"gradio {gr.__version__} has no Blocks.preprocess_data; the demo's upload gate "
                      "needs the pinned gradio (see pyproject.toml)")


class GatedBlocks(gr.Blocks):
    """`gr.Blocks` that refuses, with the demo's own message, any request naming a file that did not
    arrive through this server's upload, or that is not the media its input takes.

    Gradio's preprocessing copies every referenced file into its cache (URLs are downloaded) before a
    handler runs, so the check has to come first: `preprocess_data` is where a request's raw values
    enter that step. Without `avcot_policy` (set by `build_app`) every file is refused.
    """

    avcot_policy: UploadPolicy | None = None
    avcot_kinds: dict[int, Kind] = {}
    """Component id -> the kind of file it takes; components not listed take none."""

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):
        import anyio

        policy = self.avcot_policy or UploadPolicy(roots=())
        for block, value in zip(block_fn.inputs, inputs):
            check = functools.partial(check_request_value, value, self.avcot_kinds.get(block._id), policy)
            try:
                await anyio.to_thread.run_sync(check)  # probing media must not stall the server loop
            except UploadError as e:
                raise _user_error(e) from None
        return await super().preprocess_data(block_fn, inputs, state, explicit_call)


def _file_kinds(app: gr.Blocks) -> dict[int, Kind]:
    """Which kind of file each of `app`'s file components takes."""
    kinds: dict[type, Kind] = {gr.Video: "video", gr.Image: "image", gr.Audio: "audio"}
    return {bid: kind for bid, block in app.blocks.items() for cls, kind in kinds.items() if isinstance(block, cls)}


def _validated(path: str | None, kind: str, policy: UploadPolicy) -> Path:
    try:
        return validate_upload(path, kind, policy)  # type: ignore[arg-type]
    except UploadError as e:
        raise _user_error(e) from None


def _transcribe_handler(loaded: LoadedModel, policy: UploadPolicy, media: DemoSettings):
    def transcribe(video: str | None, reference: str, audio_only: bool) -> Iterator[tuple]:
        path = _validated(video, "video", policy)
        try:
            clip = load_clip(path, media.cavsr, need_audio=True)
        except ClipError as e:
            raise _user_error(e) from None
        reference = reference or ""
        final = None
        for result in stream_transcription(loaded, clip, reference=reference, max_new_tokens=media.max_new_tokens):
            view, final = transcription_view(result), result
            yield (view.status, view.visual_cues, view.pinyin, view.reasoning, view.transcription,
                   view.homophones, view.cer, result.raw, "", [], "")
        if not audio_only or final is None:
            return
        black = black_out(clip)
        for result in stream_transcription(loaded, black, reference=reference, max_new_tokens=media.max_new_tokens):
            ao = transcription_view(result, label="audio-only run: ")
            changes = change_segments(result.transcription, final.transcription) if result.done else []
            yield (ao.status, view.visual_cues, view.pinyin, view.reasoning, view.transcription,
                   view.homophones, view.cer, final.raw, result.transcription, changes, ao.cer)

    return transcribe


def _qa_handler(loaded: LoadedModel, policy: UploadPolicy, media: DemoSettings):
    def answer(video: str | None, image: str | None, audio: str | None, question: str,
               a: str, b: str, c: str, d: str) -> Iterator[tuple]:
        if not video and not (image or audio):
            raise _user_error(ValueError("give a video, or an image and/or an audio file"))
        v = _validated(video, "video", policy) if video else None
        i = _validated(image, "image", policy) if image else None
        s = _validated(audio, "audio", policy) if audio else None
        try:
            options = clean_options([a, b, c, d])
            clip = load_clip(v, media.mcq, audio=s, image=i, need_audio=False)
            results = stream_qa(loaded, clip, question or "", options, max_new_tokens=media.max_new_tokens)
            for result in results:
                yield qa_status(result), result.reasoning, answer_segments(options, result.answer), result.raw
        except (ClipError, ValueError) as e:
            raise _user_error(e) from None

    return answer


def _transcribe_tab(loaded: LoadedModel, policy: UploadPolicy, media: DemoSettings, examples: list) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Video (mp4 / webm / mov / mkv / avi)", sources=["upload"], elem_id="tr-video")
            reference = gr.Textbox(label="Reference transcript (optional, for CER)", elem_id="tr-reference")
            audio_only = gr.Checkbox(label="Also run audio-only (black video) to see what the video changed")
            run = gr.Button("Transcribe", variant="primary", elem_id="tr-run")
            if examples:
                gr.Examples([[str(e.video), e.reference] for e in examples], inputs=[video, reference],
                            label="Bundled synthetic examples")
        with gr.Column(scale=2):
            status = gr.Textbox(label="Status", interactive=False, elem_id="tr-status")
            cues = gr.Textbox(label="1. Visual cues", interactive=False, lines=3)
            pinyin = gr.Textbox(label="2. Acoustic analysis (Pinyin)", interactive=False, lines=2)
            reasoning = gr.Textbox(label="3. Disambiguation reasoning", interactive=False, lines=3)
            text = gr.Textbox(label="4. Transcription", interactive=False, elem_id="tr-transcription")
            marks = gr.HighlightedText(label="Homophones in the transcription", elem_id="tr-homophones",
                                       show_legend=False, combine_adjacent=True)
            cer = gr.Textbox(label="CER vs reference", interactive=False, elem_id="tr-cer")
            with gr.Accordion("Audio-only run (black video)", open=True):
                ao_text = gr.Textbox(label="Transcription without the picture", interactive=False,
                                     elem_id="tr-ao-transcription")
                changes = gr.HighlightedText(label="What the video changed (tokens of the audio-visual "
                                             "transcription that differ)", show_legend=True, show_inline_category=False,
                                            combine_adjacent=True)
                ao_cer = gr.Textbox(label="Audio-only CER", interactive=False)
            with gr.Accordion("Raw model output", open=False):
                raw = gr.Textbox(label="Raw output", interactive=False, lines=6, elem_id="tr-raw")
    run.click(_transcribe_handler(loaded, policy, media), inputs=[video, reference, audio_only],
              outputs=[status, cues, pinyin, reasoning, text, marks, cer, raw, ao_text, changes, ao_cer],
              api_name="transcribe", concurrency_id=GENERATION, concurrency_limit=1)


def _qa_tab(loaded: LoadedModel, policy: UploadPolicy, media: DemoSettings, examples: list) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Video", sources=["upload"], elem_id="qa-video")
            with gr.Row():
                image = gr.Image(label="…or an image", type="filepath", sources=["upload"], elem_id="qa-image")
                audio = gr.Audio(label="…and/or audio (wav / mp3 / flac / m4a)", type="filepath",
                                 sources=["upload"], elem_id="qa-audio")
            question = gr.Textbox(label="Question", elem_id="qa-question")
            options = [gr.Textbox(label=f"Option {letter}", elem_id=f"qa-option-{letter}") for letter in "ABCD"]
            run = gr.Button("Answer", variant="primary", elem_id="qa-run")
            rows = [[str(e.video), e.question, *e.options] for e in examples if e.question]
            if rows:
                gr.Examples(rows, inputs=[video, question, *options], label="Bundled synthetic questions")
        with gr.Column(scale=2):
            status = gr.Textbox(label="Status", interactive=False, elem_id="qa-status")
            reasoning = gr.Textbox(label="Reasoning (<think>)", interactive=False, lines=6, elem_id="qa-reasoning")
            answer = gr.HighlightedText(label="Answer", show_legend=False, color_map={"answer": "green"},
                                        elem_id="qa-answer")
            with gr.Accordion("Raw model output", open=False):
                raw = gr.Textbox(label="Raw output", interactive=False, lines=6)
    run.click(_qa_handler(loaded, policy, media), inputs=[video, image, audio, question, *options],
              outputs=[status, reasoning, answer, raw], api_name="qa", concurrency_id=GENERATION,
              concurrency_limit=1)


def build_app(loaded: LoadedModel, upload_dir: Path, *, examples_dir: Path | None = DEFAULT_EXAMPLES,
              max_upload_mb: float = 50.0, media: DemoSettings = DemoSettings()) -> gr.Blocks:
    """The demo UI over `loaded`; uploads land in `upload_dir` (the caller owns and removes it)."""
    # Gradio reads its upload/cache folder from this variable when components and the app are built.
    # gr.Examples copies the bundled clips into it too, so it is the only folder handlers may read.
    os.environ["GRADIO_TEMP_DIR"] = str(upload_dir)
    policy = UploadPolicy(roots=(upload_dir,), max_bytes=int(max_upload_mb * MB))
    examples = load_examples(examples_dir if examples_dir is not None and examples_dir.is_dir() else None)
    with GatedBlocks(title="avcot demo: see and hear before deciding", analytics_enabled=False) as app:
        gr.Markdown("# avcot: see and hear before deciding")
        if loaded.is_tiny:
            gr.Markdown(TINY_BANNER, elem_id="tiny-banner")
        gr.Markdown(f"{loaded.description}. Uploads: up to {max_upload_mb:g} MB; video "
                    f"{', '.join(sorted(EXTENSIONS['video']))}.", elem_id="model-info")
        with gr.Tab("Transcribe (AV-CoT)"):
            _transcribe_tab(loaded, policy, media, examples)
        with gr.Tab("Question answering"):
            _qa_tab(loaded, policy, media, examples)
    app.avcot_policy = policy  # the gate, tests and `launch` read the roots from here
    app.avcot_kinds = _file_kinds(app)
    return app


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           max_upload_mb: float = 50.0, prevent_thread_lock: bool = False):
    """Start the server (blocking unless prevent_thread_lock); returns Gradio's (app, local_url, share_url)."""
    allowed = [str(r) for r in app.avcot_policy.roots]
    return app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=share, max_file_size=f"{max_upload_mb:g}mb",
        allowed_paths=allowed, prevent_thread_lock=prevent_thread_lock, show_error=False, quiet=True,
        inbrowser=False, ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m demo.app", description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--base", default=None, help="'tiny' (embedded smoke-test model) or a checkpoint directory "
                   "(none given: the newest run's model under --runs, else tiny)")
    p.add_argument("--adapter", default=None, help="LoRA adapter directory to attach on top of --base (tiny if "
                   "not given)")
    p.add_argument("--runs", type=Path, default=Path("runs"),
                   help="where to look for the newest run's checkpoints/{model-last,adapter-last} when neither "
                        "--base nor --adapter is given")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights dtype")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument("--share", action="store_true", help="create a public Gradio share link (off by default)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted upload")
    p.add_argument("--examples", type=Path, default=DEFAULT_EXAMPLES, help="bundled examples dir (manifest.jsonl)")
    p.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: each task's own)")
    p.add_argument("--frame-size", type=int, default=None, help="frame side in pixels (default: each task's own)")
    p.add_argument("--max-seconds", type=float, default=None, help="clip length cap (default: each task's own)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="generation length cap")
    return p.parse_args(argv)


def demo_settings(args: argparse.Namespace, choice: ModelChoice) -> DemoSettings:
    """Media settings: each flag given, else what the served run was trained with, else the task's default."""
    flags = {"num_frames": args.num_frames, "frame_size": args.frame_size, "max_seconds": args.max_seconds}
    values, where = media_overrides(flags, choice.adapter or choice.base)
    print(f"media settings: {where}", file=sys.stderr)
    return DemoSettings.from_flags(**values, max_new_tokens=args.max_new_tokens)


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Load the model, build the UI and serve it until interrupted; 2 on a bad model path."""
    args = parse_args(argv)
    choice = choose_model(args.base, args.adapter, args.runs)
    if choice.message:
        print(choice.message, file=sys.stderr)
    try:
        loaded = load_model(choice.base, choice.adapter, dtype=args.dtype)
        media = demo_settings(args, choice)
    except (ModelLoadError, ValueError) as e:  # ValueError: a malformed training_settings.json
        print(f"error: {e}", file=sys.stderr)
        return 2
    uploads = UploadDir()
    atexit.register(uploads.cleanup)  # also on Ctrl-C / normal interpreter exit
    # SIGTERM (service managers, `kill`) would skip atexit and `finally`; treat it like Ctrl-C, which
    # Gradio's launch loop answers by closing the server.
    signal.signal(signal.SIGTERM, _interrupt)
    app = None
    try:
        app = build_app(loaded, uploads.path, examples_dir=args.examples, max_upload_mb=args.max_upload_mb,
                        media=media)
        print(f"{loaded.description}; serving on http://{args.host}:{args.port}", file=sys.stderr)
        launch(app, host=args.host, port=args.port, share=args.share, max_upload_mb=args.max_upload_mb)
    except KeyboardInterrupt:
        # A stop that lands while launch() is still starting up (the server already answers) comes here
        # instead of Gradio's launch loop: close the server ourselves; this is a normal stop (status 0).
        if app is not None:
            app.close()
    finally:
        uploads.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
