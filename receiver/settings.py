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

    # Agents' reads: live activity over REST and the MCP server (receiver.delivery.pull, .mcp).
    live_activity_limit: int = Field(
        default=20, ge=1, le=1000,
        description="Actions a live-activity read returns when the caller names no limit.",
    )
    live_activity_max_limit: int = Field(
        default=100, ge=1, le=1000,
        description="Most actions one live-activity read may ask for (a larger limit is a 400).",
    )
    live_activity_window_seconds: int = Field(
        default=1800, ge=1, le=7 * 86400,
        description="How far back live activity looks (callers may narrow it with since_seconds).",
    )
    read_pool_size: int = Field(
        default=10, ge=1, le=200,
        description="Database connections per process for agents' reads (live activity, MCP tools), "
        "apart from ingest's; read-only sessions.",
    )
    read_timeout_ms: int = Field(
        default=2000, ge=10, le=60_000,
        description="statement_timeout of agents' reads: a query running longer is cancelled (503).",
    )
    read_rate_limit: float = Field(
        default=20.0, ge=0,
        description="Reads per second per MCP key (REST live activity and every MCP request) before "
        "429 + Retry-After (0 = unlimited).",
    )
    read_burst: int = Field(default=100, ge=1, description="Burst allowance of that limit.")
    mcp_tools: str = Field(
        default="get_live_user_activity,get_user_sessions,find_users_who",
        description="Comma-separated MCP tools to serve. find_users_who lists other users: leave it "
        "out for a key handed to a customer-facing bot.",
    )
    mcp_allowed_origins: str = Field(
        default="",
        description="Comma-separated browser origins allowed to call /mcp (e.g. a hosted MCP "
        "inspector). Requests without an Origin header (servers, CLIs) and from the receiver's own "
        "origin are always allowed; any other Origin is refused (403), against DNS rebinding.",
    )

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

    def mcp_origins(self) -> frozenset[str]:
        return frozenset(
            o.strip().rstrip("/").lower() for o in self.mcp_allowed_origins.split(",") if o.strip()
        )

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def database_url_str(self) -> str:
        if self.database_url is None:
            raise RuntimeError("RECEIVER_DATABASE_URL is not set and no embedded database is running")
        return self.database_url.get_secret_value()
