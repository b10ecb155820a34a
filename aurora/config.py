"""Settings from ``AURORA_*`` environment variables, with embedded defaults under ``./var/``.

Every setting is read once into a frozen :class:`Settings`; nothing else in Aurora reads the
environment for configuration, so the table in the README is the whole truth.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .resources import bundled_file


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Aurora's whole configuration. Build it with :func:`load_settings`."""

    home: Path
    database_url: str
    broker_url: str
    policy_file: Path
    secrets_file: Path
    node_name: str
    #: largest accepted workflow body, in bytes
    max_document_bytes: int = 256 * 1024
    #: seconds a worker holds a run before the sweeper may reclaim it (renewed while it runs)
    lease_seconds: int = 60
    #: seconds between two sweeps by beat
    sweep_interval: float = 5.0
    #: a queued run this old whose message is not waiting in the broker is sent again by the sweeper
    requeue_after: int = 15
    #: artificial delay of each simulated adapter call, to make dry runs look like real ones
    simulated_latency_ms: int = 0
    #: worker processes started by ``aurora worker`` / ``aurora up``
    worker_concurrency: int = 2
    #: below this much free space (MB) on the disk of AURORA_HOME or the database, health says no
    min_free_disk_mb: int = 100
    #: the audit chain's HMAC key (outside the database; every writing machine needs the same one)
    audit_key_file: Path | None = None
    #: seconds between the signed checkpoints of the audit chain that beat has kept
    audit_checkpoint_interval: int = 3600
    #: seconds a web process remembers an API key it verified (not admin keys; 0: read every time):
    #: a key revoked in another process stops working there within this bound
    key_cache_seconds: float = 1.0

    @property
    def audit_key_path(self) -> Path:
        return self.audit_key_file or self.home / "audit.key"

    @property
    def identity_key_path(self) -> Path:
        """This node's Ed25519 key pair (federation identity), made on first start."""
        return self.home / "node_identity.pem"

    @property
    def federation_secret_path(self) -> Path:
        """The key that encrypts the peers' tokens in the database (``federation/vault.py``)."""
        return self.home / "federation_tokens.key"

    @property
    def audit_checkpoints_file(self) -> Path:
        """Where ``aurora audit checkpoint`` keeps the signed heads it made, one JSON line each."""
        return self.home / "audit_checkpoints.jsonl"

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"


def default_policy_file() -> Path:
    local = Path("policy/batch8_policy.json")
    return local if local.exists() else bundled_file("policy", "batch8_policy.json")


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (default: the process environment)."""
    env = dict(os.environ if environ is None else environ)
    home = Path(env.get("AURORA_HOME") or "var").absolute()
    database_url = env.get("AURORA_DATABASE_URL") or f"sqlite:///{home / 'aurora.db'}"
    broker_url = env.get("AURORA_BROKER_URL") or "filesystem://"
    policy_file = Path(env["AURORA_POLICY_FILE"]) if env.get("AURORA_POLICY_FILE") else default_policy_file()
    secrets_file = Path(env.get("AURORA_SECRETS_FILE") or "policy/external_secrets.json")
    node_name = env.get("AURORA_NODE_NAME") or socket.gethostname().split(".")[0] or "aurora"
    return Settings(
        home=home,
        database_url=database_url,
        broker_url=broker_url,
        policy_file=policy_file.absolute(),
        secrets_file=secrets_file.absolute(),
        node_name=node_name,
        max_document_bytes=_int(env, "AURORA_MAX_DOCUMENT_BYTES", 256 * 1024, minimum=1024),
        lease_seconds=_int(env, "AURORA_LEASE_SECONDS", 60, minimum=1),
        sweep_interval=_float(env, "AURORA_SWEEP_INTERVAL", 5.0, minimum=0.1),
        requeue_after=_int(env, "AURORA_REQUEUE_AFTER", 15, minimum=1),
        simulated_latency_ms=_int(env, "AURORA_SIMULATED_LATENCY_MS", 0),
        worker_concurrency=_int(env, "AURORA_WORKER_CONCURRENCY", 2, minimum=1),
        min_free_disk_mb=_int(env, "AURORA_MIN_FREE_DISK_MB", 100),
        audit_checkpoint_interval=_int(env, "AURORA_AUDIT_CHECKPOINT_INTERVAL", 3600, minimum=10),
        key_cache_seconds=_float(env, "AURORA_KEY_CACHE_SECONDS", 1.0),
        audit_key_file=Path(env["AURORA_AUDIT_KEY_FILE"]).absolute() if env.get("AURORA_AUDIT_KEY_FILE") else None,
    )
