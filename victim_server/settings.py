"""Victim settings: ``VIDSTEAL_*`` environment variables or CLI flags, validated once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.schemas import KeyCreate

# Tokens a careless deployment would keep; the server refuses to start with them.
_INSECURE_TOKENS = {"", "admin", "changeme", "change-me", "secret", "password", "token", "test"}
MIN_ADMIN_TOKEN_LENGTH = 16
# Secrets that may be read from a file named by VIDSTEAL_<NAME>_FILE (docker compose).
_FILE_SECRETS = ("admin_token", "metrics_token")


def _read_secret_file(path: str | Path) -> str:
    return Path(path).read_text(encoding="utf-8").strip()


class BootstrapKey(KeyCreate):
    """A key given in configuration (e.g. docker compose), with its full secret, or with
    ``api_key_file`` naming a file that holds it."""

    api_key: str = Field(pattern=r"^vsk_[A-Za-z0-9]+_[A-Za-z0-9_\-]{16,}$")

    @model_validator(mode="before")
    @classmethod
    def _api_key_from_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "api_key_file" not in data:
            return data
        if "api_key" in data:
            raise ValueError("give api_key or api_key_file, not both")
        data = dict(data)
        data["api_key"] = _read_secret_file(data.pop("api_key_file"))
        return data


class _SecretFilesSource(PydanticBaseSettingsSource):
    """``VIDSTEAL_ADMIN_TOKEN_FILE=/path`` sets ``admin_token`` from that file (and so on for
    every name in ``_FILE_SECRETS``); setting both the variable and its ``_FILE`` is an error."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every secret at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in _FILE_SECRETS:
            variable = f"VIDSTEAL_{name.upper()}"
            path = os.environ.get(f"{variable}_FILE")
            if not path:
                continue
            if os.environ.get(variable):
                raise ValueError(f"set {variable} or {variable}_FILE, not both")
            values[name] = _read_secret_file(path)
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDSTEAL_", extra="ignore")

    admin_token: SecretStr
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    redis_url: str = "redis://127.0.0.1:6379/0"
    # An idle HTTP connection is closed after this long. It must outlast clients' own idle expiry
    # (httpx: 5 s, uvicorn's default too): a server that closes first races a client reusing the
    # connection, and the client's request fails with a read error having never been answered.
    keep_alive_s: int = Field(default=75, ge=1)

    model: str = "embedded"
    weights: Path | None = None
    labels: Path | None = None
    input_spec: str | None = Field(
        default=None, description="For bring-your-own models: 'TxHxW' or a JSON InputSpec file."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(
        default=0, ge=0, description="torch threads; 0: one per core less one (the event loop's)"
    )
    # Keep freed memory for reuse (glibc malloc, process-wide; shared/memory.py): the model's
    # large activations otherwise page-fault afresh every batch. Resident memory stays at its peak.
    reuse_freed_memory: bool = True
    # On the CPU, serve a frozen TorchScript trace of the model, checked against the eager model's
    # answers at start-up (eager when it differs or tracing fails): an eager pass takes the GIL
    # back after every op, and waits for it while the event loop holds it. Turn it off for a
    # model whose forward keeps Python state or branches on the data (victim_server/inference/
    # tracing.py).
    trace_model: bool = True
    # Once started, move every object alive (model, modules, registries, keys) out of the cyclic
    # garbage collector's reach (gc.freeze; undone at shutdown): a full collection then scans what
    # requests made, not the whole heap, which cost a 0.17-0.2 s stall of the event loop.
    freeze_startup_objects: bool = True

    max_batch_clips: int = Field(default=64, ge=1)
    # The longest a micro-batch waits for company: requests that announced themselves (being
    # decoded and charged), and as many requests as were in the server when the last forward pass
    # ended; with none of either expected it runs at once (victim_server/inference/batcher.py).
    max_wait_ms: float = Field(default=20.0, ge=0.0)
    max_queue_clips: int = Field(default=1024, ge=1)
    max_clips_per_request: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Clips after decompression; a compressed body that would expand past this is a bomb.
    max_decoded_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    # JSON bodies up to this size are parsed whole (nested 'clips' lists are costly: ~0.1 s and
    # ~20 MiB per MiB); larger JSON bodies must use the base64 form, decoded in slices.
    max_json_parse_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_video_frames: int = Field(default=2048, ge=1)
    max_video_pixels: int = Field(default=1920 * 1080, ge=64)
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60)
    # A request charged but unfinished for this long is treated as abandoned (its process died):
    # a retry with the same Idempotency-Key inherits the charge instead of waiting forever.
    abandoned_after_s: float = Field(default=30.0, gt=0)
    # How long a request's reservation record is kept: a late reserve (Redis stalled past
    # redis_timeout_s) is recognised and refused for this long after its request gave up.
    reservation_ttl_s: int = Field(default=600, ge=10)
    redis_timeout_s: float = Field(default=2.0, gt=0)
    throttle_retry_after_s: float = Field(default=30.0, gt=0)
    bootstrap_keys: list[BootstrapKey] = Field(
        default_factory=list,
        description="Keys to provision at start (JSON list); existing ones are left as they are",
    )
    detection_calibration: Path | None = Field(
        default=None,
        description="Benign clips (.npz) or a calibration JSON for the detection embedding",
    )
    default_detector: Literal["auto", "prada", "prada_stats", "ood", "seat", "none"] = Field(
        default="auto",
        description="Detector of keys created without a detection policy (action log); auto: "
        "ood where the model has an OOD calibration, else none",
    )
    ood_calibration: Path | None = Field(
        default=None,
        description="OOD monitor calibration JSON (python -m victim_server calibrate-detectors); "
        "default: the one committed beside the model's weights, if any",
    )
    seat_weights: Path | None = Field(
        default=None,
        description="SEAT encoder weights (.safetensors with its .json; python -m victim_server "
        "train-detector); default: the committed encoder",
    )

    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics needs 'Authorization: Bearer <token>' (the scrape "
        "lists every key id and its remaining budget)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _SecretFilesSource(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    @field_validator("admin_token", "metrics_token")
    @classmethod
    def _refuse_insecure_token(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value()
        if token.strip().lower() in _INSECURE_TOKENS or len(token) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                f"VIDSTEAL_{str(info.field_name).upper()} must be a non-default secret of at "
                f"least {MIN_ADMIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 24`)"
            )
        return value
