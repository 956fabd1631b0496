"""One typed settings object for Portrait.

Every value can be overridden by a ``PORTRAIT_*`` environment variable (nested values use ``__``,
e.g. ``PORTRAIT_API_KEYS='{"k1": ["tags:read"]}'``). Nothing is read or created at import time:
call :func:`get_settings` (or build :class:`Settings` directly in tests) when you need it.

All generated state lives under one workspace folder, ``home`` (``PORTRAIT_HOME``); the default is
the repository root, so MLflow writes to ``mlruns/`` there.

``PORTRAIT_PROFILE=production`` keeps the code and changes only where state lives: the Feast registry
and the MLflow backend store in PostgreSQL (``PORTRAIT_POSTGRES_URL``, or MLflow elsewhere with
``PORTRAIT_MLFLOW_TRACKING_URI``) and the online store in Redis (``PORTRAIT_REDIS_URL``). The feature
tables (Feast's offline store) and, by default, MLflow artefacts stay under ``home``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from portrait.backends import normalize_postgres_url

Profile = Literal["local", "production", "cluster"]
API_SCOPES: tuple[str, ...] = (
    "tags:read",
    "lookalike:create",
    "events:write",
    "audiences:read",
    "audiences:write",
)
"""The scopes an API key may carry (``serving.web.ROUTE_SCOPES`` says which route needs which)."""


def _repo_root() -> Path:
    """The source checkout that holds this package, or the current directory for a plain install."""
    candidate = Path(__file__).resolve().parent.parent
    if (candidate / "pyproject.toml").exists():
        return candidate
    return Path.cwd()


def _default_data_dir() -> Path | None:
    shared = _repo_root().parent / "shared" / "datasets"
    return shared if shared.is_dir() else None


class ModelWindows(BaseModel):
    """Per-model training windows (days); unset values take the catalogue's defaults."""

    model_config = ConfigDict(extra="forbid")

    horizon_days: int | None = Field(None, ge=1, description="How far ahead the model predicts.")
    lookback_days: int | None = Field(
        None, ge=1, description="Churn: how recent a purchase makes a customer 'active'."
    )
    step_days: int | None = Field(None, ge=1, description="Days between training snapshots.")
    n_train: int | None = Field(None, ge=1, description="Training snapshots (at most).")
    test_date: date | None = Field(
        None, description="Out-of-time test snapshot (default: the latest whose horizon fits the data)."
    )


class Settings(BaseSettings):
    """Portrait's configuration. Paths are derived from ``home`` unless set explicitly."""

    model_config = SettingsConfigDict(env_prefix="PORTRAIT_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(default_factory=_repo_root, description="Workspace folder for all generated state.")
    profile: Profile = Field(
        "local",
        description="'local' (SQLite + files), 'production' (Redis + PostgreSQL) or 'cluster' (production's "
        "servers, features, training frames and scoring on Spark).",
    )
    data_dir: Path | None = Field(
        default_factory=_default_data_dir,
        description="Folder with the real public datasets (../shared/datasets).",
    )

    # Production profile connections.
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis online store (production profile): redis[s]://[[user]:password@]host[:port][/db].",
    )
    redis_key_prefix: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_]*$",
        description="Suffix of the Feast project name; isolates one deployment's keys (and registry "
        "entries) in a shared Redis / PostgreSQL. Letters, digits and '_' only.",
    )
    redis_timeout_s: float = Field(
        1.0, gt=0, description="Redis connect and socket timeout: a dead Redis fails a request this fast."
    )
    postgres_url: str = Field(
        "postgresql+psycopg://postgres@127.0.0.1:5432/portrait",
        description="PostgreSQL database (SQLAlchemy URL) for the Feast SQL registry and, unless "
        "mlflow_tracking_uri is set, the MLflow backend store; created if missing (production profile).",
    )
    postgres_connect_timeout_s: int = Field(
        5, ge=1, description="PostgreSQL connect timeout (libpq connect_timeout, whole seconds)."
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="Explicit MLflow tracking URI (an MLflow server http://mlflow:5000 or a database URL); "
        "overrides the profile's default.",
    )
    mlflow_artifact_root: str | None = Field(
        None,
        description="Artefact root for new MLflow experiments (default <home>/mlruns/artifacts; with an "
        "MLflow server: the server's own default).",
    )

    feast_project: str = Field(
        "portrait", pattern=r"^[A-Za-z0-9_]+$", description="Feast project name (before the key prefix)."
    )
    materialize_batch_rows: int = Field(
        50_000,
        gt=0,
        description="Rows per online-store write while materializing (bounds memory for millions of rows).",
    )

    @field_validator("api_keys")
    @classmethod
    def _known_scopes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        """Every scope of every key is one of :data:`API_SCOPES` (a typo would silently deny a caller)."""
        for n, scopes in enumerate(value.values(), start=1):
            unknown = sorted(set(scopes) - set(API_SCOPES))
            if unknown:  # the key itself is a secret: named by its position only
                raise ValueError(
                    f"API key #{n} has unknown scope(s) {', '.join(map(repr, unknown))}; valid scopes: "
                    f"{', '.join(API_SCOPES)}"
                )
        return value

    @field_validator("postgres_url", "mlflow_tracking_uri")
    @classmethod
    def _psycopg_driver(cls, value: str | None) -> str | None:
        """Use psycopg 3 for bare ``postgresql://`` URLs (SQLAlchemy would pick the absent psycopg2)."""
        return normalize_postgres_url(value) if value else value

    models: dict[str, ModelWindows] = Field(
        default_factory=dict,
        description='Per-model windows, e.g. PORTRAIT_MODELS=\'{"clv": {"horizon_days": 180}}\' or '
        "PORTRAIT_MODELS__CLV__HORIZON_DAYS=180; unset values take the catalogue's defaults.",
    )
    required_models: list[str] | None = Field(
        None,
        description="Models the service must have loaded to be ready (default: every model with a champion).",
    )
    min_positives: int = Field(
        100, ge=1, description="Data check: fewest positive (and negative) labels a classifier's split needs."
    )
    realtime_tags: bool = Field(
        True,
        description="/v1/tags reads the real-time view (fresher recency, visited_today, cart_abandoned); off: "
        "batch features only.",
    )
    cart_abandon_hours: float = Field(
        24.0,
        gt=0,
        description="Real-time tag cart_abandoned: an add-to-cart this recent with no purchase since.",
    )
    events_stream: str = Field("portrait-events", description="Broker stream/topic `portrait stream` reads.")
    broker_url: str | None = Field(
        None,
        description="Message broker of `portrait stream`: redis://… (Redis Streams, default: redis_url) or "
        "kafka://host:port (needs faststream[kafka]).",
    )
    stream_consumer: str | None = Field(
        None, description="Consumer name of `portrait stream` in its group (default: host and process id)."
    )
    stream_claim_idle_ms: int = Field(
        5_000, ge=100, description="Claim stream messages another consumer left unacknowledged this long."
    )
    stream_max_deliveries: int = Field(
        60,
        ge=2,
        description="A Redis Streams message that failed this many deliveries is set aside, with its last error, "
        "in data/quarantine/stream_dead.jsonl and acknowledged; `portrait stream --replay` sends it again.",
    )
    train_threads: int | None = Field(
        None,
        ge=1,
        description="LightGBM threads for training; default: the cores not busy with other work.",
    )

    # Serving.
    host: str = Field("127.0.0.1", description="Address the HTTP service binds to.")
    port: int = Field(3000, description="Port of the HTTP service.")
    max_ids_per_request: int = Field(
        10_000, description="Largest number of customer ids in one /v1/tags call."
    )
    api_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description="API key -> scopes (one of API_SCOPES). Empty: auth disabled, and the service answers "
        "only on a loopback address unless allow_insecure_bind.",
    )

    # HTTP boundary (issue 22).
    allow_insecure_bind: bool = Field(
        False,
        description="Serve on a non-loopback address with no API keys (auth off for everyone who can reach "
        "it); `portrait serve --insecure` sets it. Otherwise refused at start and per request.",
    )
    max_request_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest request body, in bytes (413 beyond; the body is not read further). Sized from "
        "the largest /v1/tags call: 10,000 ids of 128 characters of up to 4 UTF-8 bytes, quoted (5.2 MB), "
        "and a /v1/events batch of 10,000 items.",
    )
    max_bulk_request_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest body of the routes that take customer-id lists (/v1/lookalike, /v1/audiences "
        "create, plan, members, outcomes): e.g. 1,000,000 ids of up to 60 characters.",
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest total size of a request's header names and values (431)."
    )
    max_json_depth: int = Field(
        64,
        ge=2,
        description="Deepest nesting of arrays and objects in a JSON body (400 beyond); the deepest legitimate "
        "request is an audience filter tree.",
    )

    # Monitoring (issue 17).
    prediction_log_sample: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of served /v1/tags answers written to the prediction log (0: none, 1: all); "
        "`portrait score` always logs everything.",
    )
    prediction_log_table: str = Field(
        "portrait_predictions",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="PostgreSQL table of the prediction log (production profile; created if missing).",
    )
    drift_reference_rows: int = Field(
        5000,
        ge=100,
        description="Customers of a champion's first serving snapshot kept as its drift reference.",
    )
    drift_num_method: str = Field(
        "wasserstein", description="Evidently drift method for numerical features and the score."
    )
    drift_cat_method: str = Field(
        "jensenshannon", description="Evidently drift method for categorical features."
    )
    drift_threshold: float = Field(
        0.1,
        gt=0.0,
        description="Per-column drift threshold of those methods (distances: drift at or above it; "
        "p-value tests: drift below it).",
    )
    retrain_drift_share: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="`portrait retrain --if-needed`: retrain when at least this share of a champion's "
        "features drifted.",
    )
    retrain_on_score_drift: bool = Field(
        True,
        description="`portrait retrain --if-needed`: retrain when the champion's score distribution drifted.",
    )
    retrain_decay: float = Field(
        0.05,
        ge=0.0,
        description="`portrait retrain --if-needed`: retrain when the realised headline metric (AUC, "
        "normalised Gini) is below the champion's test figure by more than this.",
    )
    retrain_calibration: float = Field(
        0.25,
        gt=0.0,
        description="`portrait retrain --if-needed`: retrain when the realised calibration ratio (predicted "
        "/ actual rate or total) is above 1 + this or below 1 / (1 + this).",
    )

    # Identity resolution (issue 19).
    identity_kinds: dict[str, Literal["strong", "weak"]] = Field(
        default_factory=lambda: {
            "email": "strong",
            "phone": "strong",
            "member_id": "strong",
            "account_id": "strong",
            "device_id": "weak",
        },
        description="Identifier kinds of the identities input (one column each): records sharing a 'strong' "
        "value are one person; a 'weak' value is evidence for the probabilistic model only.",
    )
    identity_kind_formats: dict[str, Literal["email", "phone", "id", "id_lower"]] = Field(
        default_factory=lambda: {"email": "email", "phone": "phone", "device_id": "id_lower"},
        description="Normalisation per kind: email, phone (E.164 digits), id (trimmed, the default), id_lower.",
    )
    identity_phone_country_code: str = Field(
        "33",
        pattern=r"^[1-9][0-9]{0,2}$",
        description="Calling code of phone numbers written nationally (0...).",
    )
    identity_email_domain_aliases: dict[str, str] = Field(
        default_factory=lambda: {"googlemail.com": "gmail.com"},
        description="E-mail domains that are one mailbox.",
    )
    identity_email_dotless_domains: list[str] = Field(
        default_factory=lambda: ["gmail.com"],
        description="E-mail domains that ignore dots and '+tags' in the user name.",
    )
    identity_hash_identifiers: bool = Field(
        False,
        description="Store identifiers as salted SHA-256 of their normalised value (no raw value kept).",
    )
    identity_hash_salt: str = Field("", repr=False, description="Salt of the identifier hashes (a secret).")
    identity_max_people_per_value: int = Field(
        5,
        ge=1,
        description="An identifier value seen on more people than this (a shop tablet, 0600000000) never links.",
    )
    identity_max_cluster_records: int = Field(
        40,
        ge=2,
        description="A person that probabilistic links would grow beyond this many records is reported, not merged.",
    )
    identity_match_probability: float = Field(
        0.8, gt=0, lt=1, description="Splink match probability from which two records are one person."
    )
    identity_conflict_guard: bool = Field(
        True,
        description="A strong value held by records with clearly different birth dates links nobody, and no "
        "probabilistic link joins records with clearly different first names or birth dates.",
    )
    identity_probabilistic: bool = Field(
        True,
        description="Join people by the Splink model too; false: strong identifiers only (deterministic).",
    )
    identity_model: Literal["em", "priors"] = Field(
        "em",
        description="How the first full run trains the Splink model: EM, or the built-in priors (u sampled).",
    )
    identity_threads: int | None = Field(
        None, ge=1, description="DuckDB threads of the identity step (default: all)."
    )

    # Cluster profile (issue 20).
    spark_master: str = Field(
        "local[2]",
        description="Cluster profile: the Spark master (local[N], spark://host:7077, yarn, k8s://...). Unused "
        "with spark_connect_url, and under spark-submit (which sets the master itself).",
    )
    spark_connect_url: str | None = Field(
        None,
        description="Cluster profile: a Spark Connect endpoint (sc://host:15002) to run on instead of a "
        "driver in this process.",
    )
    spark_app_name: str = Field("portrait", description="Cluster profile: the Spark application name.")
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description="Cluster profile: Spark configuration over Portrait's defaults, e.g. "
        """PORTRAIT_SPARK_CONF='{"spark.executor.memory": "8g"}'.""",
    )
    score_partitions: int | None = Field(
        None,
        ge=1,
        description="Cluster profile: partitions `portrait score` scores in parallel (default: twice Spark's "
        "default parallelism).",
    )
    dask_scheduler: str | None = Field(
        None,
        description="Distributed refit: a Dask scheduler address (tcp://host:8786); default: a local "
        "cluster of dask_workers processes.",
    )
    dask_workers: int = Field(2, ge=1, description="Distributed refit: workers of the local Dask cluster.")
    distributed_refit: bool = Field(
        False,
        description="Refit each tag model's final booster on Dask workers (LightGBM's distributed training) "
        "instead of in the training process; the search still runs on a sample on one machine.",
    )
    train_memory_rows: int = Field(
        5_000_000,
        ge=1000,
        description="Cluster profile: the most labelled rows of a training frame the training process holds. "
        "The whole frame is written by Spark; above this, the search, calibration and evaluation read a "
        "sample of customers of about this many rows and the distributed refit (required then) reads every "
        "row from disk.",
    )

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _cluster_tracking(cls, value: str | None, info: ValidationInfo) -> str | None:
        """The cluster profile keeps MLflow where production does: on ``postgres_url`` unless set."""
        if value is None and info.data.get("profile") == "cluster":
            return info.data.get("postgres_url")
        return value

    # Online store loads (issue 16).
    online_load_batch: int = Field(
        20_000, gt=0, description="Customers per batch of an online-store load (bounds its memory)."
    )
    online_load_rebuild_share: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="SQLite: an incremental load changing more than this share of the customers rebuilds the "
        "tables beside the live ones and renames them in, instead of updating them in one transaction.",
    )
    online_load_redis_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Socket timeout of an online-store load's own Redis connection (big pipelines).",
    )

    # Temporary files (issue 22).
    scratch_dir: Path | None = Field(
        None,
        description="Where each command keeps its temporary files and DuckDB spills (a folder per process, "
        "removed at exit, or at the next start if the process was killed); default: <home>/data/tmp.",
    )

    # Audit trail (issue 22).
    audit_secret: SecretStr | None = Field(
        None,
        description="Key of the HMAC-SHA256 fingerprint that names an API key in the audit log; default: a "
        "random key generated once per workspace into <home>/data/audit_secret (mode 0600). Never logged.",
    )

    # ---- derived paths -------------------------------------------------------------------------
    @property
    def data_root(self) -> Path:
        return self.home / "data"

    @property
    def raw_dir(self) -> Path:
        """Inputs as delivered (synthetic or mapped from a real dataset); never modified."""
        return self.data_root / "raw"

    @property
    def clean_dir(self) -> Path:
        """Validated inputs that satisfy the contract."""
        return self.data_root / "clean"

    @property
    def quarantine_dir(self) -> Path:
        """Rejected rows with the reason, one file per input."""
        return self.data_root / "quarantine"

    @property
    def reports_dir(self) -> Path:
        return self.data_root / "reports"

    @property
    def features_dir(self) -> Path:
        """Feature tables (the Feast offline store's Parquet sources)."""
        return self.data_root / "features"

    @property
    def feast_dir(self) -> Path:
        """Feast registry and SQLite online store for the local profile."""
        return self.data_root / "feast"

    @property
    def scratch_root(self) -> Path:
        """Temporary files of running commands (``scratch_dir``, default ``data/tmp``)."""
        return self.scratch_dir or self.data_root / "tmp"

    def bentoml_home(self, port: int) -> Path:
        """BentoML's home for the server on ``port`` (``data/serving/bentoml-<port>``; what starts a server uses
        it where ``BENTOML_HOME`` is not set). Each ``bentoml serve`` empties its home's Prometheus folder when
        it starts, so two servers on one home would wipe each other's metrics; a port has one server at a time."""
        return self.data_root / "serving" / f"bentoml-{port}"

    @property
    def mlruns_dir(self) -> Path:
        return self.home / "mlruns"

    @property
    def audit_log(self) -> Path:
        """The audit trail of privileged calls, allowed or denied (:mod:`portrait.audit`), one JSON line each."""
        return self.data_root / "audit" / "audit.jsonl"

    @property
    def audit_secret_file(self) -> Path:
        """Where the generated audit fingerprint key is kept when ``audit_secret`` is not set."""
        return self.data_root / "audit_secret"

    @property
    def feast_project_name(self) -> str:
        """The Feast project: ``feast_project`` plus ``_<redis_key_prefix>`` when a prefix is set.

        Feast keys every Redis entry and every SQL-registry row by project, so the prefix isolates a
        deployment (or a test) in shared servers.
        """
        return self.feast_project + (f"_{self.redis_key_prefix}" if self.redis_key_prefix else "")

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: explicit, else PostgreSQL (production) or SQLite in ``mlruns/``."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if self.servers:
            return self.postgres_url
        return f"sqlite:///{self.mlruns_dir / 'mlflow.db'}"

    @property
    def servers(self) -> bool:
        """Whether the profile keeps its state in servers (Redis, PostgreSQL): production and cluster."""
        return self.profile in ("production", "cluster")

    @property
    def tracking_server(self) -> bool:
        """Whether MLflow is reached through a tracking server (HTTP) rather than a database."""
        return self.tracking_uri.split("://", 1)[0] in ("http", "https")

    @property
    def artifact_root(self) -> str:
        """Artefact root for new experiments: explicit, else ``<home>/mlruns/artifacts``."""
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        return (self.mlruns_dir / "artifacts").as_uri()

    def ensure_dirs(self) -> None:
        """Create the workspace folders (called by commands that write, never at import)."""
        for path in (
            self.raw_dir,
            self.clean_dir,
            self.quarantine_dir,
            self.reports_dir,
            self.features_dir,
            self.feast_dir,
            self.mlruns_dir,
            self.audit_log.parent,
        ):
            path.mkdir(parents=True, exist_ok=True)


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides winning."""
    return Settings(**overrides)  # type: ignore[arg-type]


__all__ = ["ModelWindows", "Profile", "Settings", "get_settings"]
