"""Receiver configuration, read once from ``RECEIVER_*`` environment variables.

There is no module-level instance: ``cli`` builds a :class:`Settings` and hands it to
``app.create_app``, so tests can build as many differently-configured apps as they like.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECEIVER_", env_file=None, extra="ignore")

    # Where to listen, and the base URL printed for webhook/stream URLs.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = None
    workers: int = Field(default=1, ge=1, le=64)

    # Database. Unset => an embedded Postgres under ``data_dir`` is started by ``receiver serve``.
    database_url: SecretStr | None = None
    data_dir: Path = Path(".data")
    embedded_pg_port: int = Field(default=54329, ge=1, le=65535)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_timeout_seconds: float = Field(default=5.0, gt=0)

    # Admin API (POST /products): loopback callers, or this bearer token.
    admin_token: SecretStr | None = None
    admin_allow_loopback: bool = True

    # Ingest.
    max_body_bytes: int = Field(default=MIB, ge=1024)
    max_decompressed_bytes: int = Field(default=10 * MIB, ge=1024)
    batch_max_events: int = Field(default=1000, ge=1)
    secret_grace_seconds: int = Field(default=24 * 3600, ge=0)

    # Stream.
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    stream_page_size: int = Field(default=500, ge=1, le=10_000)
    stream_ring_size: int = Field(default=4096, ge=16)
    poll_seconds: float = Field(default=5.0, gt=0)

    # Abuse controls (0 disables). Defaults never trip for legitimate use.
    auth_fail_limit: int = Field(default=30, ge=0)
    auth_fail_window_seconds: float = Field(default=60.0, gt=0)
    ingest_rate_limit: float = Field(default=0.0, ge=0)
    ingest_burst: int = Field(default=20_000, ge=1)

    # Retention (receiver.storage.retention; per-product overrides in products.retention_days and
    # products.payload_retention_days). 0 = keep forever / keep payloads as long as events.
    retention_days: int = Field(default=30, ge=0)
    payload_retention_days: int = Field(default=0, ge=0)
    partitions_ahead_days: int = Field(default=3, ge=1, le=60)
    # Partition maintenance inside the receiver: once at start, then every N seconds
    # (0 = never; run `receiver db maintain` from cron instead).
    maintenance_seconds: float = Field(default=3600.0, ge=0)

    # Privacy: the installation's key for hashed emails (privacy_policy.email = "hash").
    # Required as soon as one product hashes emails; the receiver refuses to start without it.
    # Changing it changes every hash from then on (users are counted anew).
    pii_hash_key: SecretStr | None = None

    # Garbage collection (receiver.ops.heap; `receiver serve` only): freeze what survives each full
    # collection so thousands of open streams are not walked on every one; hand it back to
    # the collector every N seconds so reference cycles among it are reclaimed (0: only at
    # shutdown, so such cycles are kept for the life of the process).
    gc_freeze: bool = True
    gc_rescan_seconds: float = Field(default=600.0, ge=0)

    # Push mode (receiver.delivery.push; docs/push.md).
    push_enabled: bool = Field(
        default=True,
        description="Run push deliverers in this process. Every receiver process competes for "
        "each push endpoint and exactly one delivers it; false keeps this process out.",
    )
    push_allowed_hosts: str = Field(
        default="",
        description="Comma-separated hosts push URLs may point at (exact names or IP literals, "
        "or *.example.com for any subdomain). Empty: any host. Checked at registration and "
        "before every delivery; set it wherever untrusted parties can register products.",
    )
    push_max_attempts: int = Field(
        default=10, ge=1, le=1000,
        description="Attempts per payload (the first included) before it is dead-lettered. "
        "A product overrides it with integration_config.max_attempts.",
    )
    push_max_age_seconds: int = Field(
        default=86_400, ge=1,
        description="A failing payload is dead-lettered when its next attempt would come later "
        "than this after its first one. A product overrides it with "
        "integration_config.max_age_seconds.",
    )
    push_backoff_base_seconds: float = Field(
        default=1.0, gt=0,
        description="Wait after the first failed attempt; it doubles after each further failure, "
        "with jitter (between half and all of it), up to RECEIVER_PUSH_BACKOFF_MAX_SECONDS.",
    )
    push_backoff_max_seconds: float = Field(
        default=300.0, gt=0,
        description="Longest wait between two attempts (a Retry-After answer may ask for more, up "
        "to an hour). Payloads behind a failing one wait for it, so this bounds how late "
        "delivery resumes once an endpoint is back.",
    )
    push_max_in_flight: int = Field(
        default=8, ge=1, le=64,
        description="Requests out at once per push endpoint. Payloads start in position order "
        "and never two of one session at once, so each session's arrive in order; 1 sends "
        "one at a time, so the endpoint gets everything in position order. A product overrides "
        "it with integration_config.max_in_flight.",
    )
    push_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120,
        description="Deadline of one push request, connection included; a request that takes "
        "longer counts as a network error and is retried.",
    )
    push_max_connections: int = Field(
        default=32, ge=1, le=1000,
        description="Push requests in flight at once from this process, over all endpoints.",
    )
    push_db_connections: int = Field(
        default=2, ge=1, le=50,
        description="Database connections push delivery may use in this process (its own pool, "
        "apart from RECEIVER_DB_POOL_SIZE), plus one that holds the deliverers' locks.",
    )
    push_claim_seconds: float = Field(
        default=2.0, gt=0, le=60,
        description="How often a process looks for push endpoints nobody delivers (new ones, or "
        "those of a process that died): how fast another process takes over.",
    )
    push_attempts_kept: int = Field(
        default=200, ge=1, le=100_000,
        description="Attempts kept per push endpoint in push_attempts (the newest ones).",
    )
    push_send_bearer: bool = Field(
        default=True,
        description="Send Authorization: Bearer <secret> with every push, as the hosted "
        "connector does. Turn it off when the endpoint verifies signatures only (the secret "
        "then never travels).",
    )

    # POST /sessions/link (receiver.delivery.links).
    link_rate_limit: float = Field(
        default=2.0, gt=0,
        description="POST /sessions/link requests per second allowed per client address "
        "(a token bucket; over it: 429 with Retry-After).",
    )
    link_burst: int = Field(
        default=20, ge=1,
        description="Burst size of the POST /sessions/link rate limit, per client address.",
    )

    # Logs: one JSON object per line with RECEIVER_LOG_JSON=true (request ids included).
    log_level: str = "INFO"
    log_json: bool = False

    @field_validator("database_url", mode="before")
    @classmethod
    def _normalise_driver(cls, value: object) -> object:
        # People paste psql-style URLs; SQLAlchemy needs the asyncpg driver named.
        if isinstance(value, str) and value:
            for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://"):
                if value.startswith(prefix):
                    return "postgresql+asyncpg://" + value[len(prefix) :]
        return value

    @field_validator("pii_hash_key", mode="after")
    @classmethod
    def _strong_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() == "":
            return None
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("RECEIVER_PII_HASH_KEY must be at least 16 characters (use 32+ random bytes)")
        return value

    def hash_key_bytes(self) -> bytes | None:
        if self.pii_hash_key is None:
            return None
        return self.pii_hash_key.get_secret_value().encode("utf-8")

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def database_url_str(self) -> str:
        if self.database_url is None:
            raise RuntimeError("RECEIVER_DATABASE_URL is not set and no embedded database is running")
        return self.database_url.get_secret_value()
