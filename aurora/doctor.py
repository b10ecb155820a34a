"""``aurora doctor``: the seed's security checklist as a command. Each finding says what is wrong
and what to do; the exit status is 0 (all good), 1 (warnings) or 2 (errors), for CI and cron.

Every item of the checklist has a finding: secrets file 0600, a recent encrypted backup, quorum
of 2 or more, a dry run before an adapter went live, rate limits on live adapters, webhook secrets
for every live provider that calls back, 2FA (``info``: Aurora cannot see it, so the finding says
what to check where), monitoring reachable, the audit chain intact, a canary before live.
An ``info`` finding never changes the exit status.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from .errors import AuditKeyError, AuroraError

#: a federation token older than this should be rotated
ROTATE_AFTER = timedelta(days=90)
#: each adapter's webhook secret, when its provider calls back (aurora/web/webhooks.py)
WEBHOOK_SECRETS = {"stripe": ("stripe", "webhook_secret"), "typeform": ("typeform", "webhook_secret"),
                   "mailgun": ("mailgun", "webhook_signing_key")}
#: where each provider's account (and so its 2FA) is managed
ACCOUNTS = {"stripe": "dashboard.stripe.com → Settings → Personal details → Two-step authentication",
            "mailgun": "app.mailgun.com → Account → Security → Two-factor authentication",
            "typeform": "admin.typeform.com → Account → Security",
            "social": "business.facebook.com → Security Center → Two-factor authentication (every admin)",
            "engine": "each AI provider's console (OpenAI, Anthropic, Perplexity) → account security"}
#: seconds doctor waits for the monitoring endpoint
MONITOR_TIMEOUT = 5.0


@dataclass(frozen=True)
class Finding:
    level: str  # ok | info (never changes the exit status) | warn | error
    check: str
    message: str
    fix: str = ""


def run_checks(runtime: Any) -> list[Finding]:
    from . import adapter_state, audit
    from .adapters import BY_NAME
    from .adapters.selftest import SAMPLES, canary_probe_id
    from .federation.models import FederationToken, Node
    from .models import AuditRecord, utcnow
    from .policy import PolicyStore
    from .secrets import load_secrets

    findings: list[Finding] = []
    add = findings.append
    settings = runtime.settings
    try:
        policy = PolicyStore(settings.policy_file).current()
        add(Finding("ok", "policy", f"{settings.policy_file} is valid (version {policy.version})"))
    except AuroraError as exc:
        # the file is hot-reloaded: who may write it may switch payments live
        fix = (f"chmod go-w {settings.policy_file}" if "writable by group or others" in str(exc)
               else "fix the key it names; `aurora doctor` checks it again")
        add(Finding("error", "policy", str(exc), fix))
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
    with runtime.db.read() as session:
        simulated = dict(session.execute(select(AuditRecord.adapter, func.count()).where(
            AuditRecord.mode == "simulated").group_by(AuditRecord.adapter)).all())
    live: list[str] = []
    ctx = CallContext(canary_probe_id(), policy, secrets, rollouts=rollouts)
    for name, adapter in BY_NAME.items():
        mode = adapter.decide(SAMPLES[name], ctx)
        wants_live = "not configured" in mode.reason
        if wants_live:
            add(Finding("warn", f"{name} secrets", f"{name} may go live by policy but its secrets are placeholders",
                        f"fill in the {name} section of {path}"))
        if not mode.live:
            continue
        live.append(name)
        if not simulated.get(adapter.name):
            add(Finding("warn", f"{name} dry run", f"{name} is live but never made a simulated call here (no dry run first)",
                        f"set adapters.{name}.dry_run to true, run the workflow, read the simulated request in "
                        f"`aurora audit export`, then turn it live"))
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

    # One finding per checklist item even when all is well, so the output shows it was checked.
    checked = {finding.check for finding in findings}
    if not live:
        add(Finding("ok", "dry run", "no adapter acts live: everything is simulated"))
    else:
        for item, what in (("dry run", "made simulated calls before going live"), ("canary", "went live through a canary"),
                           ("rate limit", "has a rate limit"), ("webhook secret", "that calls back has its webhook secret")):
            if not any(f"{name} {item}" in checked for name in live):
                add(Finding("ok", item, f"every live adapter {what} ({', '.join(live)})"))
    add(_two_factor(live))
    add(_monitoring())

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


def _two_factor(live: list[str]) -> Finding:
    """Aurora cannot see the providers' accounts: say what to check, and where."""
    names = live or list(ACCOUNTS)
    where = "; ".join(f"{name}: {ACCOUNTS[name]}" for name in names if name in ACCOUNTS)
    return Finding("info", "2FA", "Aurora cannot see whether two-factor authentication is on: check it for "
                   "every account that holds a key in the secrets file, and for the machines' and code host's "
                   "logins", f"{where}; also the mail accounts of the approvers (approval links go there)")


def _monitoring() -> Finding:
    """Monitoring must be able to see Aurora: ``/health`` at ``AURORA_URL`` answers."""
    import requests

    url = os.environ.get("AURORA_URL", "").rstrip("/")
    if not url:
        return Finding("info", "monitoring", "AURORA_URL is not set, so doctor cannot try the health endpoint",
                       "point monitoring at GET /health/ready (load balancer, 200/503) and scrape GET /metrics; "
                       "set AURORA_URL for doctor to try it")
    try:
        response = requests.get(f"{url}/health", timeout=MONITOR_TIMEOUT)
    except requests.RequestException as exc:
        return Finding("error", "monitoring", f"{url}/health is not reachable ({exc.__class__.__name__})",
                       "start the web (aurora web / aurora up) or fix AURORA_URL; monitoring sees nothing now")
    if response.status_code != 200:
        return Finding("warn", "monitoring", f"{url}/health answers HTTP {response.status_code}",
                       "see its components (curl the same URL): the part it names is down")
    return Finding("ok", "monitoring", f"{url}/health answers 200")


def exit_status(findings: list[Finding]) -> int:
    levels = {f.level for f in findings}
    return 2 if "error" in levels else (1 if "warn" in levels else 0)
