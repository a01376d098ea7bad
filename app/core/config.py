"""Every setting of the service, typed, read once from the environment (prefix ``READMIT_``)."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The repository's migrations/ folder, which setup.py installs as the package app.migrations; found
# through the import system, so an installed service and a checkout's editable install both see it.
MIGRATIONS_DIR = Path(str(files("app.migrations")))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="READMIT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="folder of the SQLite file and index snapshots")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite file readmit.db in data_dir")
    migrations_dir: Path = Field(MIGRATIONS_DIR, description="Alembic scripts")

    max_body_bytes: int = Field(64 * 1024 * 1024, description="larger request bodies get 413")
    max_batch_records: int = Field(1000, description="records per enrolment call")
    max_templates_per_record: int = Field(20, description="samples per record in one call")
    max_probes: int = Field(10, description="probe samples per search")
    min_probe_quality: dict[str, Annotated[float, Field(ge=0, le=100)]] = Field(
        default_factory=dict,
        description="per modality, the lowest probe sample quality searched (0-100, ISO/IEC 29794: NFIQ 2 for "
        'fingers, OFIQ for faces), as JSON: {"finger": 20, "face": 30}. Lower samples are dropped; a probe with '
        "none left is refused (low_quality). A modality not named, or a sample sent without quality, is not screened",
    )
    min_enrolment_quality: dict[str, Annotated[float, Field(ge=0, le=100)]] = Field(
        default_factory=dict,
        description='per modality, the minimum enrolment sample quality (0-100), as JSON: {"finger": 20}. A record '
        "whose every template is below it is refused (low_quality); one with some templates above it keeps them all. "
        "A modality not named, or a template sent without quality, is not screened",
    )

    default_fpir: float = Field(0.001, description="FPIR for the match band when a request names none")
    default_fmr: float = Field(0.0001, description="FMR of a verification decision when a request names none")
    calibration_searches: int = Field(2000, description="leave-one-out searches calibrating a gallery's FPIR")

    processes: int = Field(
        1, ge=1, description="service processes behind the port (`readmit serve --processes`; >1 needs PostgreSQL)"
    )
    search_workers: int = Field(2, description="threads running searches, earliest deadline first")
    max_batch_searches: int = Field(64, description="searches coalesced into one matcher call (1: no batching)")
    identification_threads: int = Field(
        2, ge=1, description="threads an identification's database reads and writes take turns on (see README)"
    )
    search_lease_s: float = Field(
        10.0, gt=0, description="a search held by a process that stops renewing it is claimed by another after this"
    )
    search_claim_poll_s: float = Field(
        1.0, gt=0, description="how often a process looks for searches to claim without being notified"
    )
    probe_retention_days: int = Field(30, ge=0, description="probes of closed or expired cases are erased after this")
    expiry_interval_s: float = Field(10.0, description="how often cases and queued searches past deadline expire")
    deduplication_lease_s: float = Field(
        60.0,
        gt=0,
        description="a deduplication job whose process stops renewing its lease is resumed by another after this",
    )
    deduplication_poll_s: float = Field(5.0, gt=0, description="how often the worker looks for deduplication jobs")
    link_fmr: float = Field(
        1e-6, gt=0, lt=1, description="FMR of the match band of a link between cases (possible: ten times it)"
    )
    exact_max_templates: int = Field(200_000, description="above this a gallery uses PQ fast-scan")
    shortlist_length: int = Field(1000, ge=1, description="templates the PQ scan proposes for exact re-ranking")
    matcher_backend: Literal["local", "ray"] = Field("local", description="where indexes live: this process or Ray")
    ray_address: str = Field("auto", description="Ray cluster: auto, ray://host:10001, or local (start one here)")
    ray_shards: int = Field(4, ge=1, description="shards (Ray actors) per gallery with the ray backend")
    ray_cpus_per_shard: float = Field(1.0, gt=0, description="CPUs Ray reserves for each shard actor")
    ray_timeout_s: float = Field(60.0, gt=0, description="how long a search waits for a shard before shard_unavailable")
    ray_placement_timeout_s: float = Field(
        10.0, gt=0, description="how long a gallery's shards wait for CPUs held by others before shards_unplaceable"
    )
    snapshot_interval_s: float = Field(300.0, description="how often changed indexes are snapshotted")
    change_poll_s: float = Field(
        0.5,
        gt=0,
        description="how often each process reads the change feed even without a notification (bounds the delay "
        "before a change committed by another process is searchable here; the only wake-up on SQLite)",
    )

    requests_per_minute: int = Field(1200, description="per principal; beyond it 429 with Retry-After")
    failed_auth_per_minute: int = Field(30, description="per client address; beyond it 429 with Retry-After")

    key_cache_s: float = Field(
        5.0,
        ge=0,
        description="how long a checked API key, and the terms an identification is admitted on (its case, the "
        "agreements, the galleries), are trusted without reading the database; a change is seen at its commit "
        "through this process, through another when its notification arrives, at the latest after this "
        "(0: read every time)",
    )

    audit_key_file: Path | None = Field(
        None,
        description="the audit log's Ed25519 signing key (readmit audit keygen); default: audit-log.key in data_dir",
    )
    audit_log_name: str | None = Field(
        None,
        description="the log's name (checkpoint origin) when the first start of a new embedded installation "
        "creates its signing key; default: <host name>/readmit-audit",
    )
    audit_checkpoint_interval_s: float = Field(
        60.0, gt=0, description="a checkpoint is signed when the tree has grown and this long has passed since the last"
    )
    audit_checkpoint_events: int = Field(
        1000, ge=1, description="... or as soon as this many events were added since the last checkpoint"
    )
    audit_sequence_interval_s: float = Field(
        0.2,
        gt=0,
        description="how often committed audit events are sequenced: seq, chain hash, Merkle leaf (bounds the delay)",
    )
    background_process: bool = Field(
        True,
        description="the audit log's sequencer and the case linker run in a process of their own, a child of each "
        "serving process, rather than in threads of it, whose requests they slowed (README: Where an "
        "identification's time goes)",
    )

    metrics_token: str | None = Field(None, description="bearer token Prometheus may scrape with")

    node_key_file: Path | None = Field(
        None,
        description="the node's Ed25519 identity for federation (readmit node init); default: node.key in data_dir",
    )
    federation_timeout_s: float = Field(
        10.0, gt=0, description="how long a peer has to answer one message before it counts as peer_unavailable"
    )
    federation_poll_interval_s: float = Field(
        30.0,
        gt=0,
        description="how often remote searches not settled are polled at their peer (notifications' fallback)",
    )
    federation_notify_interval_s: float = Field(
        1.0, gt=0, description="how often this node looks for review changes of peers' searches to notify them of"
    )
    federation_signature_window_s: int = Field(
        300, ge=1, description="a signed message created longer ago (or further ahead) than this is refused"
    )
    federation_max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="larger messages from a peer get 413 payload_too_large"
    )
    federation_requests_per_minute: int = Field(600, ge=1, description="per peer; beyond it 429 with Retry-After")

    encrypt_at_rest: bool = Field(
        True, description="seal templates, probes and index snapshots (off: only to measure its cost)"
    )
    share_decrypted_indexes: bool | None = Field(
        None,
        description="the processes of a node map one decrypted copy of a sealed snapshot (false: one each; "
        "unset: shared when several processes serve, --processes > 1)",
    )
    shared_memory_dir: Path = Field(
        Path("/dev/shm"), description="where that copy is kept: a RAM-backed folder (tmpfs, ramfs), else none is"
    )
    master_key: SecretStr | None = Field(None, description="the master key, base64; takes precedence over the file")
    master_key_file: Path | None = Field(
        None, description="the master key file; default: master.key in $XDG_CONFIG_HOME/readmit (~/.config/readmit)"
    )

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'readmit.db').resolve()}"

    @property
    def shared_database(self) -> bool:
        """Whether other processes may commit to this database: several processes, or a database
        named by URL (PostgreSQL, or an SQLite file other instances may open). The embedded
        default lives in the data folder, which one service or command holds at a time."""
        return self.processes > 1 or self.database_url is not None

    @property
    def audit_key_path(self) -> Path:
        return self.audit_key_file or self.data_dir / "audit-log.key"

    @property
    def audit_origin(self) -> str:
        return self.audit_log_name or f"{socket.gethostname()}/readmit-audit"

    @property
    def new_embedded_install(self) -> bool:
        """The embedded default (SQLite in the data folder) before its first start: no database
        file yet, so no audit log any key ever signed."""
        return self.database_url is None and not (self.data_dir / "readmit.db").exists()

    @property
    def node_key_path(self) -> Path:
        return self.node_key_file or self.data_dir / "node.key"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def master_key_path(self) -> Path:
        """Outside the data folder by default, so that a copy of the folder is not a copy of
        the key."""
        if self.master_key_file is not None:
            return self.master_key_file
        config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
        return Path(config_home) / "readmit" / "master.key"


@lru_cache
def get_settings() -> Settings:
    return Settings()
