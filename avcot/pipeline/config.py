"""Pipeline configuration (YAML -> frozen dataclasses) and the role factory that builds backends.

A config names, for each role, which backend kind serves it; chat-backed roles point to a named
entry under ``chats``. With no config file every role uses its offline rule backend (plus real
rapidocr), so ``python -m avcot.pipeline cavsr`` runs with no network.

Identities that enter the resume hash are computed from the *spec* (kind + options), so a rerun
can decide what is already done without building any backend; secrets never enter a spec (the
API key is read from the environment variable the spec names), and neither do an endpoint's speed
and retry settings (timeouts, retries, backoff, rate limit, concurrency), so tuning them keeps
every stored answer. The run's own ``concurrency``/``shard_size``/``executor`` never enter it.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from avcot.pipeline.backends import BackendError
from avcot.pipeline.store import canonical_json

ROLE_KINDS: dict[str, tuple[str, ...]] = {
    "asr_a": ("rule_asr", "openai_asr", "faster_whisper", "chat"),
    "asr_b": ("rule_asr", "openai_asr", "faster_whisper", "chat"),
    "teacher_asr": ("rule_asr", "openai_asr", "faster_whisper", "chat"),
    "judge": ("rule", "chat"),
    "ocr": ("rapidocr", "chat"),
    "caption": ("rule", "chat"),
    "annotator": ("rule", "chat"),
    "visual_teacher": ("ocr", "chat"),
    "audio_teacher": ("transcript", "chat"),
    "merger": ("template", "chat"),
}
# Rule roles that delegate to another role: their identity includes that role's spec.
DELEGATES = {("visual_teacher", "ocr"): "ocr", ("audio_teacher", "transcript"): "teacher_asr"}


@dataclass(frozen=True)
class RoleSpec:
    """Which backend serves one role."""

    kind: str
    chat: str | None = None
    """Name of an entry under `chats` (kind 'chat' only)."""
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Keyword arguments of the backend's constructor."""


@dataclass(frozen=True)
class ChatSpec:
    """A chat model: kind 'openai' (EndpointConfig fields), 'transformers' (model_path, ...) or 'omni'
    (a Qwen2.5-Omni thinker in-process: model_path, a checkpoint directory or 'tiny')."""

    kind: Literal["openai", "transformers", "omni"]
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class CavsrSettings:
    """CAVSR stage settings (they enter the resume hash of the stages that use them)."""

    ocr_frames: int = 3
    """Uniformly sampled frames per clip given to OCR (~0.4 s each on CPU)."""
    ocr_size: tuple[int, int] = (224, 224)
    """(height, width) the OCR frames are resized to."""
    caption_frames: int = 4
    caption_size: tuple[int, int] = (224, 224)
    max_audio_seconds: float | None = 30.0
    on_mismatch: Literal["filter", "keep"] = "filter"
    """Trace whose transcription differs from the reference: drop it (filtered) or keep it (recorded)."""
    max_candidates: int = 8
    """Homophone candidates listed per ambiguous span."""


@dataclass(frozen=True)
class AvrtSettings:
    """AVRT stage settings."""

    visual_frames: int = 8
    """Uniform frames given to the visual teacher (paper: 8)."""
    frame_size: tuple[int, int] = (224, 224)
    audio_seconds: float = 10.0
    """Audio given to the audio teacher (paper: first 10 s)."""
    require_both_correct: bool = True
    """Keep only rows where both teachers answered correctly (difficulty is kept for every row)."""


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a pipeline run needs besides its input and output paths."""

    shard_size: int = 8
    """Rows per Parquet shard (the unit of resumption)."""
    concurrency: int = 2
    """Rows processed at once within a stage (threads; remote clients also rate-limit themselves)."""
    executor: Literal["local", "ray"] = "local"
    progress: bool = True
    roles: Mapping[str, RoleSpec] = field(default_factory=dict, hash=False)
    chats: Mapping[str, ChatSpec] = field(default_factory=dict, hash=False)
    cavsr: CavsrSettings = CavsrSettings()
    avrt: AvrtSettings = AvrtSettings()

    def role(self, name: str) -> RoleSpec:
        """The spec of a role; unlisted roles use their offline rule backend."""
        if name not in ROLE_KINDS:
            raise KeyError(f"unknown role {name!r}; known: {sorted(ROLE_KINDS)}")
        return self.roles.get(name) or default_role(name)

    def role_identity(self, name: str) -> str:
        """Stable identity of a role's backend spec and version (goes into the resume hash; no secrets)."""
        spec = self.role(name)
        options = dict(spec.options)
        if spec.kind == "openai_asr":  # an endpoint's speed settings never change a transcript
            from avcot.pipeline.openai_compat import answer_options

            options = answer_options(options)
        # the backend's prompt/parser version: a changed judge prompt must not reuse stored verdicts
        ident = {"kind": spec.kind, "version": backend_version(backend_class(name, spec.kind)), "options": options}
        if spec.chat is not None:
            chat = self.chats[spec.chat]
            ident["chat"] = {"kind": chat.kind, "options": chat_answer_options(chat)}
        if (name, spec.kind) in DELEGATES:
            ident["uses"] = self.role_identity(DELEGATES[(name, spec.kind)])
        return f"{name}:{canonical_json(ident)}"


def backend_class(role: str, kind: str) -> type:
    """The class that serves `role` with backend `kind` (nothing is built)."""
    from avcot.pipeline import chat_roles, local, rules, transcribe_api, vlm_ocr

    if kind == "chat":
        return {"asr_a": chat_roles.ChatAsr, "asr_b": chat_roles.ChatAsr, "teacher_asr": chat_roles.ChatAsr,
                "judge": chat_roles.ChatJudge, "caption": chat_roles.ChatCaptioner, "ocr": vlm_ocr.ChatOcr,
                "annotator": chat_roles.ChatTraceWriter, "visual_teacher": chat_roles.ChatVisualTeacher,
                "audio_teacher": chat_roles.ChatAudioTeacher, "merger": chat_roles.ChatMerger}[role]
    if kind == "rule":
        return {"judge": rules.RuleJudge, "caption": rules.RuleCaptioner, "annotator": rules.RuleTraceWriter}[role]
    return {"rule_asr": rules.RuleAsr, "openai_asr": transcribe_api.OpenAITranscriber,
            "faster_whisper": local.FasterWhisperAsr, "rapidocr": local.RapidOcr, "ocr": rules.OcrVisualTeacher,
            "transcript": rules.TranscriptAudioTeacher, "template": rules.TemplateMerger}[kind]


def backend_version(cls: type) -> str:
    """A backend class's prompt/parser version: its ``version()`` (chat roles: vN plus a hash of the
    prompt), else a class-level ``identity`` string (the rule backends), else the class's name."""
    version = getattr(cls, "version", None)
    if callable(version):
        return str(version())
    identity = getattr(cls, "identity", None)
    return identity if isinstance(identity, str) else f"{cls.__module__}.{cls.__qualname__}"


def chat_answer_options(chat: ChatSpec) -> dict[str, Any]:
    """A chat spec's options without its speed and retry settings (those never change a reply)."""
    if chat.kind == "openai":
        from avcot.pipeline.openai_compat import answer_options

        return answer_options(chat.options)
    return dict(chat.options)


def default_role(name: str) -> RoleSpec:
    """Offline default of each role."""
    if name == "asr_b":
        return RoleSpec("rule_asr", options={"mode": "swap"})
    if name in ("asr_a", "teacher_asr"):
        return RoleSpec("rule_asr", options={"mode": "reference"})
    return RoleSpec(ROLE_KINDS[name][0])


def _settings(cls: type, raw: Mapping[str, Any] | None, where: str):
    """Build a settings dataclass, refusing unknown keys; lists become tuples."""
    raw = dict(raw or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def _role_spec(name: str, raw: Any, chats: Mapping[str, ChatSpec], where: str) -> RoleSpec:
    if name not in ROLE_KINDS:
        raise ValueError(f"{where}: unknown role {name!r}; known: {sorted(ROLE_KINDS)}")
    if not isinstance(raw, Mapping) or "kind" not in raw:
        raise ValueError(f"{where}.roles.{name}: needs a mapping with a 'kind'")
    raw = dict(raw)
    kind, chat = raw.pop("kind"), raw.pop("chat", None)
    if kind not in ROLE_KINDS[name]:
        raise ValueError(f"{where}.roles.{name}: kind {kind!r} not in {ROLE_KINDS[name]}")
    if kind == "chat" and chat not in chats:
        raise ValueError(f"{where}.roles.{name}: kind 'chat' needs chat: <one of {sorted(chats)}>")
    return RoleSpec(kind=kind, chat=chat, options=raw)


def config_from_dict(raw: Mapping[str, Any], where: str = "config") -> PipelineConfig:
    """Validate a parsed YAML mapping into a PipelineConfig (errors name the offending key)."""
    raw = dict(raw or {})
    chats: dict[str, ChatSpec] = {}
    for name, spec in dict(raw.pop("chats", None) or {}).items():
        spec = dict(spec or {})
        kind = spec.pop("kind", None)
        if kind not in ("openai", "transformers", "omni"):
            raise ValueError(f"{where}.chats.{name}: kind must be 'openai', 'transformers' or 'omni', got {kind!r}")
        if "api_key" in spec:
            raise ValueError(f"{where}.chats.{name}: put the key in an env var and name it in api_key_env")
        chats[name] = ChatSpec(kind, spec)
    roles = {n: _role_spec(n, r, chats, where) for n, r in dict(raw.pop("roles", None) or {}).items()}
    cavsr = _settings(CavsrSettings, raw.pop("cavsr", None), f"{where}.cavsr")
    avrt = _settings(AvrtSettings, raw.pop("avrt", None), f"{where}.avrt")
    top = _settings(PipelineConfig, raw, where)
    return dataclasses.replace(top, roles=roles, chats=chats, cavsr=cavsr, avrt=avrt)


def load_config(path: str | Path | None) -> PipelineConfig:
    """Read a YAML config; None gives the all-offline defaults."""
    if path is None:
        return PipelineConfig()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline config {path} does not exist")
    return config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, str(path))


class RoleFactory:
    """Builds each role's backend once per process; roles naming the same chat share one client."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self._built: dict[str, Any] = {}
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}  # ship only the config to Ray workers; they build their own

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])

    def get(self, role: str) -> Any:
        """The backend serving `role` (built on first use)."""
        with self._lock:
            if role not in self._built:
                self._built[role] = self._build_role(role)
            return self._built[role]

    def chat(self, name: str) -> Any:
        """The chat backend named `name` under `chats` (built on first use)."""
        with self._lock:
            key = f"chat:{name}"
            if key not in self._built:
                self._built[key] = build_chat(self.config.chats[name])
            return self._built[key]

    def _build_role(self, role: str) -> Any:
        spec, opts = self.config.role(role), dict(self.config.role(role).options)
        cls = backend_class(role, spec.kind)
        try:
            if spec.kind == "chat":
                return cls(self.chat(spec.chat), **opts)
            if (role, spec.kind) in DELEGATES:  # a rule teacher built on the role it delegates to
                return cls(self.get(DELEGATES[(role, spec.kind)]), **opts)
            return cls(**opts)
        except TypeError as exc:
            raise BackendError(f"role {role} (kind {spec.kind}): bad options {sorted(opts)}: {exc}") from exc


def build_chat(spec: ChatSpec) -> Any:
    """A ChatBackend from its spec."""
    from avcot.pipeline import local, openai_compat

    if spec.kind == "openai":
        try:
            cfg = openai_compat.EndpointConfig(**dict(spec.options))
        except TypeError as exc:
            raise BackendError(f"openai chat: bad options {sorted(spec.options)}: {exc}") from exc
        return openai_compat.OpenAIChat(cfg)
    if spec.kind == "omni":
        from avcot.pipeline.omni import OmniChat

        try:
            return OmniChat(**dict(spec.options))
        except TypeError as exc:
            raise BackendError(f"omni chat: bad options {sorted(spec.options)}: {exc}") from exc
    return local.TransformersChat(**dict(spec.options))
