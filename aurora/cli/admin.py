"""Administration: keys, adapters, doctor (the audit commands are in ``ledger.py``)."""

from __future__ import annotations

import sys

import click

from ._common import _fail, _print, _runtime, main
from ._output import emit, json_wanted, table

# -- keys -------------------------------------------------------------------------------------

@main.group()
def keys() -> None:
    """API keys (run on the server; they go straight to the database)."""


@keys.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "submitter", "approver", "viewer"]), required=True,
              help="The person's role; every key of a person acts with it.")
@click.option("--person", default=None, help="Whose key it is (default: a person named NAME, made if new).")
def keys_create(name: str, role: str, person: str | None) -> None:
    """Make a key; prints the key alone on stdout (it is never shown again).

    A person may hold several keys (laptop, phone, CI): quorum counts people, not keys.
    """
    from .. import keys as key_store
    from ..models import Role

    key = key_store.create(_runtime().db, name, Role(role), person)
    emit({"name": name, "role": role, "person": person or name, "key": key}, lambda: click.echo(key))


@keys.command("list")
def keys_list() -> None:
    """Show every key's name, person, role and state (never the key)."""
    from .. import keys as key_store

    rows = key_store.listing(_runtime().db)
    emit(rows, lambda: table(["NAME", "PERSON", "ROLE", "KEY ID", "STATE"], [
        [r["name"], r["person"], r["role"], r["key_id"], f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"]
        for r in rows], empty="no keys"))


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke a key at once; its votes on runs that have not acted stop counting (never the last
    admin key: exit 2)."""
    from .. import people

    runtime = _runtime()
    touched = people.revoke_key(runtime.db, name, runtime.settings.node_name)
    people.ask_again(runtime.engine, touched)
    emit({"revoked": name, "votes_void_on": list(touched)}, lambda: click.echo(
        f"revoked {name}" + (f"; its votes on {len(touched)} run(s) no longer count" if touched else "")))


# -- people -----------------------------------------------------------------------------------

@main.group("people")
def people_group() -> None:
    """People and their keys (run on the server). A person has one role; their keys act with it."""


@people_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the people as JSON.")
def people_list(as_json: bool) -> None:
    """Show each person, their role and their keys."""
    from .. import people

    rows = people.listing(_runtime().db)
    if as_json:
        _print(rows)
        return
    table(["PERSON", "ROLE", "STATE", "KEYS"], [
        [person["name"], person["role"], f"removed {person['removed_at']}" if person["removed_at"] else "active",
         ", ".join(f"{k['name']} ({k['key_id']}{', revoked' if k['revoked_at'] else ''})" for k in person["keys"])
         or "no keys"] for person in rows], empty="no people")


@people_group.command("remove")
@click.argument("name")
def people_remove(name: str) -> None:
    """Remove a person and revoke all their keys; their votes on runs that have not acted stop
    counting (never the last admin: exit 2)."""
    from .. import people

    runtime = _runtime()
    touched = people.remove_person(runtime.db, name, runtime.settings.node_name)
    people.ask_again(runtime.engine, touched)
    emit({"removed": name, "votes_void_on": list(touched)}, lambda: click.echo(
        f"removed {name}" + (f"; their votes on {len(touched)} run(s) no longer count" if touched else "")))


# -- adapters ---------------------------------------------------------------------------------

@main.group()
def adapters() -> None:
    """Adapter rollout: status, self-test, promote past the canary, re-enable after a rollback."""


def _adapter_name(name: str) -> str:
    from ..adapter_state import ADAPTERS

    if name not in ADAPTERS:
        _fail(f"unknown adapter {name!r}; one of: {', '.join(ADAPTERS)}", 2)
    return name


@adapters.command("status")
def adapters_status() -> None:
    """Each adapter's mode for a new run now, and why."""
    from dataclasses import replace

    from .. import adapter_state
    from ..adapters import BY_NAME
    from ..adapters.context import default_context
    from ..adapters.selftest import SAMPLES, canary_probe_id

    runtime = _runtime()
    rollouts = adapter_state.load(runtime.db)
    ctx = replace(default_context(), rollouts=rollouts)
    rows = []
    for name, adapter in BY_NAME.items():
        configured = adapter.credentials_configured(SAMPLES[name], ctx.secrets)
        inside = adapter.decide(SAMPLES[name], replace(ctx, run_id=canary_probe_id()))
        rollout = rollouts[name]
        stage = "rolled back" if rollout.rolled_back else ("promoted" if rollout.promoted else "canary")
        mode = "live" if inside.live and stage == "promoted" else (
            f"live for {runtime.policies.current().canary_percent}% of runs" if inside.live else "simulated")
        rows.append({"adapter": name, "mode": mode, "stage": stage, "credentials": configured, "reason": inside.reason})
    emit(rows, lambda: table(["ADAPTER", "NEW RUNS", "STAGE", "CREDENTIALS", "WHY"], [
        [r["adapter"], r["mode"], r["stage"], "configured" if r["credentials"] else "not configured", r["reason"]]
        for r in rows]))


@adapters.command("test")
@click.argument("name", required=False)
def adapters_test(name: str | None) -> None:
    """Make a simulated call of NAME (or every adapter) and say what would happen live."""
    from ..adapter_state import ADAPTERS
    from ..adapters.selftest import check

    results = [check(each) for each in ([_adapter_name(name)] if name else list(ADAPTERS))]
    if json_wanted():
        _print(results if not name else results[0])
        return
    for result in results:
        _print_check(result)


def _print_check(result: dict) -> None:
    """One self-test in words: the simulated call, whether a live one would happen now, and what
    it lacks (``--json`` has the request and the settings)."""
    simulated, live = result["simulated_call"], result["live_now"]
    request = simulated.get("request") or {}
    click.echo(f"{result['adapter']}: simulated call {'ok' if simulated.get('ok') else 'FAILED'} "
               f"({simulated.get('msg')}; would send {request.get('method', '')} {request.get('url', '')})".rstrip())
    click.echo(f"  a run now would be {'LIVE' if live['live'] else 'SIMULATED'}: {live['reason']}")
    for missing in result.get("missing_for_live") or []:
        click.echo(f"  missing for live: {missing}")


@adapters.command("promote")
@click.argument("name")
def adapters_promote(name: str) -> None:
    """End NAME's canary: every run that may go live goes live."""
    from .. import adapter_state

    runtime = _runtime()
    adapter_state.promote(runtime.db, _adapter_name(name), runtime.settings.node_name)
    emit({"adapter": name, "stage": "promoted"}, lambda: click.echo(f"{name}: promoted"))


@adapters.command("enable")
@click.argument("name")
def adapters_enable(name: str) -> None:
    """Clear NAME's rollback; it starts again in its canary."""
    from .. import adapter_state

    runtime = _runtime()
    adapter_state.enable(runtime.db, _adapter_name(name), runtime.settings.node_name)
    emit({"adapter": name, "stage": "canary"}, lambda: click.echo(f"{name}: enabled (canary)"))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(as_json: bool) -> None:
    """The security checklist: secrets mode and backup, placeholders, quorum, dry run first,
    canaries, webhook secrets, rate limits, 2FA (what to check where), monitoring (GET
    $AURORA_URL/health), the audit chain, federation tokens, the policy. Exit 0 all good,
    1 warnings, 2 errors; info findings never change it."""
    from dataclasses import asdict

    from ..doctor import exit_status, run_checks

    findings = run_checks(_runtime())
    if as_json:
        _print([asdict(f) for f in findings])
    else:
        marks = {"ok": "ok  ", "info": "info", "warn": "WARN", "error": "FAIL"}
        for f in findings:
            click.echo(f"[{marks[f.level]}] {f.check}: {f.message}" + (f"\n       -> {f.fix}" if f.fix else ""))
    sys.exit(exit_status(findings))
