"""``aurora doctor``: the seed's security checklist as a command. Each finding says what is wrong
and what to do; the exit status is 0 (all good), 1 (warnings) or 2 (errors), for CI and cron."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from .errors import AuditKeyError, AuroraError

#: a federation token older than this should be rotated
ROTATE_AFTER = timedelta(days=90)
#: each adapter's webhook secret, when it has one
WEBHOOK_SECRETS = {"stripe": ("stripe", "webhook_secret"), "typeform": ("typeform", "webhook_secret")}


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | error
    check: str
    message: str
    fix: str = ""


def run_checks(runtime: Any) -> list[Finding]:
    from . import adapter_state, audit
    from .adapters import BY_NAME
    from .adapters.selftest import SAMPLES, canary_probe_id
    from .models import FederationToken, Node, utcnow
    from .policy import PolicyStore
    from .secrets import load_secrets

    findings: list[Finding] = []
    add = findings.append
    settings = runtime.settings
    try:
        policy = PolicyStore(settings.policy_file).current()
        add(Finding("ok", "policy", f"{settings.policy_file} is valid (version {policy.version})"))
    except AuroraError as exc:
        add(Finding("error", "policy", str(exc), "fix the key it names; `aurora doctor` checks it again"))
        return findings

    path = settings.secrets_file
    secrets = None
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            add(Finding("error", "secrets file mode", f"{path} has mode {mode:03o}", f"chmod 600 {path}"))
        else:
            add(Finding("ok", "secrets file mode", f"{path} is 0600"))
        try:
            secrets = load_secrets(path)
        except AuroraError as exc:
            add(Finding("error", "secrets file", str(exc), "fix the file; see policy/external_secrets.example.json"))
        from .backup import freshness

        stale = freshness(settings.home / "last_backup.json", path, settings.audit_key_path)
        add(Finding("warn" if stale else "ok", "secrets backup", stale or "a recent encrypted backup exists",
                    "aurora secrets backup FILE, and keep FILE on another machine" if stale else ""))
    else:
        add(Finding("warn", "secrets file", f"{path} does not exist: every adapter stays simulated",
                    "copy policy/external_secrets.example.json there, fill it in, chmod 600"))
    if secrets is None:
        from .secrets import Secrets

        secrets = Secrets()

    quorum = policy.quorum_for_critical
    add(Finding("ok" if quorum >= 2 else "error", "quorum", f"critical actions need {quorum} approval(s)",
                "" if quorum >= 2 else "set security.require_quorum_for_critical to 2 or more"))

    from .adapters import CallContext

    rollouts = adapter_state.load(runtime.db)
    ctx = CallContext(canary_probe_id(), policy, secrets, rollouts=rollouts)
    for name, adapter in BY_NAME.items():
        mode = adapter.decide(SAMPLES[name], ctx)
        wants_live = "not configured" in mode.reason
        if wants_live:
            add(Finding("warn", f"{name} secrets", f"{name} may go live by policy but its secrets are placeholders",
                        f"fill in the {name} section of {path}"))
        if not mode.live:
            continue
        no_canary = rollouts[name].promoted or policy.canary_percent >= 100
        if no_canary:
            add(Finding("warn", f"{name} canary", f"{name} is live for every run, without a canary",
                        "fine once proven; otherwise set security.canary_percent below 100"))
        if not policy.adapter(name).get("rate_limit"):
            add(Finding("warn", f"{name} rate limit", f"{name} is live without a rate limit",
                        f"set adapters.{name}.rate_limit, e.g. \"10/second\""))
        if name in WEBHOOK_SECRETS and not secrets.configured(*WEBHOOK_SECRETS[name]):
            add(Finding("error", f"{name} webhook secret", f"{name} is live but {'.'.join(WEBHOOK_SECRETS[name])} is not set",
                        "add the provider's webhook signing secret to the secrets file"))

    with runtime.db.read() as session:
        now = utcnow()
        tokens = list(session.scalars(select(FederationToken).where(FederationToken.revoked_at.is_(None))))
        peers = list(session.scalars(select(Node)))
    try:
        intact, bad_pk, why, *_ = audit.verify_node(settings, runtime.db)
    except AuditKeyError as exc:
        intact, bad_pk, why = False, None, str(exc)
    where = f"at record {bad_pk}" if bad_pk is not None else ""
    add(Finding("ok" if intact else "error", "audit chain",
                "intact" if intact else f"broken {where}: {why}".replace("broken : ", "broken: "),
                "" if intact else "restore the audit table from a backup and investigate who changed it"))
    for token in tokens:
        if now - token.created_at > ROTATE_AFTER:
            add(Finding("warn", "federation token", f"the token for {token.peer} (id {token.pk}) is older than 90 days",
                        f"aurora federation token create {token.peer}; give it to the peer; "
                        f"aurora federation token revoke {token.pk}"))
    for peer in peers:
        if len(peer.token) < 32:
            add(Finding("warn", "peer token", f"the token registered for peer {peer.name} is short (weak)",
                        f"ask {peer.name} for a new token (aurora federation token create) and register it again"))
    if policy.federation["enabled"] and not tokens and not peers:
        add(Finding("warn", "federation", "federation is enabled but no tokens or peers exist",
                    "aurora federation token create PEER / aurora nodes register URL NAME TOKEN"))
    return findings


def exit_status(findings: list[Finding]) -> int:
    levels = {f.level for f in findings}
    return 2 if "error" in levels else (1 if "warn" in levels else 0)
