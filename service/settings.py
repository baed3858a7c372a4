"""The one settings object: every knob of the worker, read from RUNSTEPS_* variables."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.connection import parse_url

__all__ = ["Settings"]

# Files container engines create (Docker, Podman); Kubernetes sets this variable in every pod.
_CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))


def in_container() -> bool:
    """Whether this process runs in a container (a Kubernetes pod, Docker, Podman)."""
    return "KUBERNETES_SERVICE_HOST" in os.environ or any(p.exists() for p in _CONTAINER_MARKERS)


def _default_consumer() -> str:
    # In a container the hostname is the pod's (or container's) name: one worker per
    # hostname, the same name after a restart in place, so its pending entries are its own
    # again. Elsewhere (tests, development) several workers share a host: hostname-pid.
    host = socket.gethostname()
    return host if in_container() else f"{host}-{os.getpid()}"


MIN_TOKEN_CHARS = 16
"""The shortest bearer token accepted: a short one is guessed, however it is compared."""


def _redis_url(url: str) -> str:
    # redis-py's own parser, so a URL it would refuse at the first connection (bad port,
    # unknown scheme) is refused now; its messages never repeat the password.
    parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    return url


def _empty_is_unset(value: object) -> object:
    # An optional setting the ConfigMap lists at its default holds "": unset, not invalid.
    return None if value == "" else value


_Unset = BeforeValidator(_empty_is_unset)


class Settings(BaseSettings):
    """Worker configuration; built once, validated when built (tests pass values directly)."""

    model_config = SettingsConfigDict(env_prefix="RUNSTEPS_", extra="ignore", frozen=True)

    redis_url: Annotated[str, AfterValidator(_redis_url)] = Field(
        "redis://localhost:6379/0", description="Redis connection URL"
    )
    source_stream: str = Field("runsteps.events", description="stream of run-step events")
    group: str = Field("runsteps", description="consumer group on the source stream")
    consumer: str = Field(default_factory=_default_consumer, description="consumer name")
    derived_stream: str = Field("runsteps.derived", description="stream of derived events")
    dlq_stream: str = Field("runsteps.dlq", description="dead-letter stream")
    key_prefix: str = Field("runsteps", description="prefix of every state key")
    derived_maxlen: PositiveInt = Field(1_000_000, description="approximate MAXLEN of derived")
    dlq_maxlen: PositiveInt = Field(100_000, description="approximate MAXLEN of the DLQ")
    max_payload_bytes: PositiveInt = Field(1_048_576, description="larger entries are refused")
    batch_size: PositiveInt = Field(500, description="entries fetched per XREADGROUP")
    # Below redis-py's 5 s socket timeout: a longer BLOCK times out on every idle poll.
    block_ms: int = Field(200, gt=0, le=4000, description="XREADGROUP BLOCK when idle")
    linger_ms: float = Field(
        2.0,
        ge=0,
        le=100,
        description="after a partial batch, wait this long before the next fetch: fewer, "
        "fuller batches (less CPU) at moderate rates, for up to this much latency",
    )
    state_ttl_s: PositiveInt = Field(
        7 * 86_400, description="a run's state expires this long after its last step ended"
    )
    stall_after_s: PositiveInt = Field(600, description="in_progress longer than this: stalled")
    source_retention_s: int = Field(
        3600,
        ge=0,
        description="source entries every consumer group has acked are trimmed once this old",
    )
    memory_pressure_ratio: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Redis's used memory over its maxmemory from which source entries every "
        "consumer group has acked are trimmed whatever their age",
    )
    claim_idle_ms: PositiveInt = Field(30_000, description="pending idle time before a claim")
    max_deliveries: PositiveInt = Field(5, description="deliveries before an entry is dead")
    partitions: PositiveInt = Field(1, description="source streams <stream>:{p}, p < N")
    own_partitions: str = Field(
        "",
        pattern=r"^\s*(\d+\s*(,\s*\d+\s*)*)?$",
        description="partitions this replica alone reads, comma-separated, e.g. '0,2' (pin "
        "each partition to one replica: they then never race for a step); '' reads every "
        "partition, shared with the other replicas",
    )
    cluster: bool = Field(False, description="RUNSTEPS_REDIS_URL points at a Redis Cluster")
    stall_scan_s: float = Field(5.0, gt=0, description="how often stalled steps are looked for")
    unhealthy_after_s: float = Field(
        60.0,
        gt=0,
        description="not consuming this long (Redis unanswered, a subscriber that cannot be "
        "restarted): /healthz fails, so the pod is restarted",
    )
    shutdown_grace_s: float = Field(20.0, gt=0, description="SIGTERM: time to finish a batch")
    http_host: str = Field("0.0.0.0", description="bind address of the HTTP port")
    http_port: int = Field(8080, ge=0, le=65535, description="health, metrics and query API")
    http_token: SecretStr = Field(
        SecretStr(""),
        description="bearer token the query API (/runs/...) requires; empty: open to anyone "
        "who reaches the port. Probes and /metrics never require it",
    )
    http_token_file: str = Field(
        "", description="a file holding that token (a mounted Kubernetes Secret), read at start"
    )
    log_format: Literal["json", "text"] = Field("json", description="log line format")
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(lambda v: str(v).upper())
    ] = Field("INFO", description="lowest level logged; DEBUG adds FastStream's per-batch lines")
    http_access_log: bool = Field(False, description="log every HTTP request (probes, scrapes)")
    otel_enabled: bool = Field(False, description="OpenTelemetry tracing of consumed batches")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="the worker's and export-otel's event loop; auto: uvloop when installed"
    )
    # What runs cost and how far they may go. Every budget is off when unset (or ""); a run
    # past one is reported once per limit (run.budget_exceeded), never stopped.
    prices_file: Annotated[Path | None, _Unset] = Field(
        None,
        description="YAML or JSON prices adding to or overriding the bundled ones (negotiated "
        "rates, fine-tuned or self-hosted models); read and validated at start-up",
    )
    budget_tokens: Annotated[PositiveInt | None, _Unset] = Field(
        None, description="a run's total tokens past this: run.budget_exceeded (tokens)"
    )
    budget_usd: Annotated[PositiveFloat | None, _Unset] = Field(
        None,
        allow_inf_nan=False,
        description="a run's cost in US dollars past this: run.budget_exceeded (usd)",
    )
    budget_steps: Annotated[PositiveInt | None, _Unset] = Field(
        None, description="a run's steps started past this: run.budget_exceeded (steps)"
    )
    budget_seconds: Annotated[PositiveFloat | None, _Unset] = Field(
        None,
        allow_inf_nan=False,
        description="a run in progress longer than this: run.budget_exceeded (seconds)",
    )
    metrics_max_labels: PositiveInt = Field(
        100,
        description="distinct tool names, models (and other free-form values) per metric "
        "label; the rest are counted as `other`",
    )
    # `runsteps export-otel` (service/export/): OTLP itself is configured by the standard
    # OTEL_* variables; these say what it reads and where its refusals go.
    export_group: str = Field("runsteps-otel", description="the exporter's group on derived")
    export_dlq_stream: str = Field(
        "runsteps.export.dlq", description="derived entries the exporter cannot map, and why"
    )
    export_provider_name: str = Field(
        "openai", description="gen_ai.provider.name of every span (e.g. azure.ai.openai)"
    )
    export_retry_max_s: float = Field(
        30.0, gt=0, description="longest wait between attempts while the OTLP backend fails"
    )
    export_encoder: Literal["wire", "sdk"] = Field(
        "wire",
        description="how spans become OTLP/HTTP bytes: `wire`, runsteps' own encoder (the "
        "SDK's bytes, a seventh of its encoding CPU), or `sdk`, the OpenTelemetry SDK's; gRPC "
        "always uses the SDK's",
    )

    @model_validator(mode="after")
    def _owned_partitions_exist(self) -> Self:
        missing = [p for p in self.owned_partitions if p >= self.partitions]
        if missing:
            raise ValueError(
                f"own_partitions names {missing}, but there are {self.partitions} partitions "
                f"(0..{self.partitions - 1})"
            )
        return self

    @model_validator(mode="after")
    def _one_readable_token(self) -> Self:
        if self.http_token.get_secret_value() and self.http_token_file:
            raise ValueError("set RUNSTEPS_HTTP_TOKEN or RUNSTEPS_HTTP_TOKEN_FILE, not both")
        self.query_token()  # an unreadable or too short token fails now, not per request
        return self

    def query_token(self) -> str | None:
        """The bearer token the query API requires (RUNSTEPS_HTTP_TOKEN, or the content of
        RUNSTEPS_HTTP_TOKEN_FILE without surrounding white space); None: no token."""
        if self.http_token_file:
            try:
                token = Path(self.http_token_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"RUNSTEPS_HTTP_TOKEN_FILE cannot be read: {exc}") from None
        else:
            token = self.http_token.get_secret_value()
            if not token:
                return None
        if len(token) < MIN_TOKEN_CHARS:  # never the token itself in the message
            raise ValueError(
                f"the HTTP token (RUNSTEPS_HTTP_TOKEN or its file) has fewer than "
                f"{MIN_TOKEN_CHARS} characters"
            )
        return token

    @property
    def owned_partitions(self) -> tuple[int, ...]:
        """The partitions this replica reads: `own_partitions`, or every one."""
        if not self.own_partitions.strip():
            return tuple(range(self.partitions))
        return tuple(sorted({int(p) for p in self.own_partitions.split(",")}))
