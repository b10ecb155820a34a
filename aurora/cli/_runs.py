"""Runs in words: what a run does, how it stands, what came of it, and what to do next."""

from __future__ import annotations

from typing import Any

import click

from ._common import mode_label
from ._output import ago, mode_text, short_id, status_text, style


def what(run: dict[str, Any]) -> str:
    """What the run does, from its document, in one line."""
    document = run.get("document") or {}
    payload = document.get("payload") or {}
    goal = run.get("goal") or document.get("goal")
    if goal == "send_email":
        to = payload.get("to")
        to = ", ".join(to) if isinstance(to, list) else to
        return f"send the email {payload.get('subject', '')!r} to {to}"
    if goal == "charge":
        return f"charge {payload.get('amount')} {str(payload.get('currency', '')).upper()} to {payload.get('customer')}"
    if goal == "post_external":
        return f"post to {payload.get('platform', 'a platform')}: {str(payload.get('content', ''))[:60]!r}"
    if goal == "analyse":
        return f"analyse a text of {len(str(payload.get('text', '')))} characters"
    if goal == "ingest_forms":
        return f"ingest the answers of form {payload.get('form_id')}"
    return f"{goal} ({run.get('name')})"


def mode_words(run: dict[str, Any], err: bool = False) -> str:
    label = mode_label(run)
    reason = run.get("mode_reason") or (run.get("approval") or {}).get("reason")
    if label == "-" and run.get("approval") and run["status"] in ("awaiting_approval", "queued", "running"):
        # not acted yet: what it would be once approved
        label = "LIVE" if run["approval"].get("live") else "SIMULATED"
        return f"{mode_text(label, err)} once approved" + (f" ({reason})" if reason else "")
    if label == "BLOCKED":
        blocked = run["blocked"]
        return f"{mode_text(label, err)}: {blocked['message']} ({blocked.get('what_to_do', '')})"
    if label == "-":
        return "- (it did not act)" if run["status"] in ("rejected", "cancelled", "expired", "failed") else "-"
    return mode_text(label, err) + (f" ({reason})" if reason else "")


def approvals_words(run: dict[str, Any]) -> str | None:
    gate = run.get("approvals") or {}
    if not gate.get("required"):
        return None
    counted = [v for v in gate.get("votes", []) if v.get("counts") and v.get("decision") == "approve"]
    names = ", ".join(v.get("person") or v.get("voter") for v in counted)
    text = f"{gate.get('received', len(counted))} of {gate['required']}" + (f" ({names})" if names else "")
    if gate.get("rejected_by"):
        text += f"; rejected by {gate['rejected_by']}"
    elif gate.get("missing"):
        text += f"; {gate['missing']} more needed" + (f", until {gate['deadline'][:16].replace('T', ' ')} UTC"
                                                      if gate.get("deadline") else "")
    return text


def result_words(run: dict[str, Any]) -> str | None:
    """What came of the run, in words; None while nothing did."""
    status, result, error = run["status"], run.get("result") or {}, run.get("error") or {}
    if status == "succeeded":
        if run.get("mode") != "live":
            return "simulated only: nothing was sent" + (f" ({result['msg']})" if result.get("msg") else "")
        ref = next((result[k] for k in ("id", "payment_intent", "post_id", "message_id") if result.get(k)), None)
        return "done for real" + (f": {result['message']}" if result.get("message") else "") + (
            f" (provider id {ref})" if ref else "")
    if error:
        text = error.get("message") or error.get("type") or "failed"
        return text + (f"; {error['what_to_do']}" if error.get("what_to_do") else "")
    if status == "rejected":
        return f"rejected by {(run.get('approvals') or {}).get('rejected_by') or 'an approver'}; nothing was sent"
    if status in ("cancelled", "expired"):
        return f"{status}; nothing was sent"
    return None


def next_step(run: dict[str, Any], url: str | None) -> str | None:
    """What to do about a run that waits: the command, and the approval page."""
    if run["status"] != "awaiting_approval":
        return None
    page = f"{url}/ui/runs/{run['id']}" if url else None
    return f"approve it: aurora approve {short_id(run['id'])}" + (f"  or open {page}" if page else "")


def headline(run: dict[str, Any], err: bool = False) -> str:
    """One line that cannot be misread: what happened, live or simulated, and why."""
    label = mode_label(run)
    line = status_text(run["status"].upper(), err) + (f" {mode_text(label, err)}" if label != "-" else "")
    if run.get("mode_reason"):
        line += f": {run['mode_reason']}"
    if run.get("blocked"):
        line += f": {run['blocked']['message']} ({run['blocked']['what_to_do']})"
    elif (run.get("error") or {}).get("what_to_do"):
        line += f" ({run['error']['what_to_do']})"
    return line


def progress_line(run: dict[str, Any]) -> str:
    line = f"{short_id(run['id'])} {run['name']}: {run['status']}"
    if run.get("mode"):
        line += f" {mode_label(run)}"
    if run.get("step"):
        line += f" (step {run['step']})"
    if run["status"] == "awaiting_approval":
        approvals = run.get("approvals", {})
        line += f", {approvals.get('received', 0)}/{approvals.get('required')} approvals"
    if run.get("blocked"):
        line += f" BLOCKED ({run['blocked']['component']}): {run['blocked']['message']}"
    return line


#: event types in words for the timeline
EVENTS = {"run.queued": "queued", "run.running": "started", "run.awaiting_approval": "waits for approval",
          "run.approved": "approved", "run.rejected": "rejected", "run.succeeded": "succeeded",
          "run.failed": "failed", "run.cancelled": "cancelled", "run.expired": "expired",
          "run.needs_reconciliation": "needs reconciliation", "run.not_acted": "not acted",
          "run.vote": "vote", "run.retry": "will be tried again", "run.blocked": "blocked",
          "run.requeued": "sent to a worker again", "run.lease_lost": "worker lost; taken over",
          "run.settled": "settled by the provider", "run.settlement_kept": "settlement kept",
          "approval.approved": "approved", "approval.rejected": "rejected", "approval.voided": "a vote stopped counting",
          "approval.notified": "approvers notified"}


def _event_words(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    words = EVENTS.get(event["type"], event["type"].removeprefix("run.").replace("_", " "))
    if event["type"] == "run.queued" and data.get("submitted_by"):
        words = "submitted"
    who = data.get("person") or data.get("voter") or data.get("submitted_by") or data.get("by")
    if who:
        words += f" by {who}"
    if event["type"] == "run.awaiting_approval" and data.get("required"):
        words += f" ({data.get('received', 0)} of {data['required']})"
    return words


def print_status(run: dict[str, Any], url: str | None, timeline: bool = True, steps: list[str] | None = None) -> None:
    """``aurora status``: a summary a person can read at a glance."""
    click.echo(headline(run))
    rows = [("Run", f"{style(short_id(run['id']), bold=True)}{run['id'][8:]}  {run['name']} ({run['goal']})"),
            ("Does", what(run)),
            ("Status", status_text(run["status"]) + (f" (step {run['step']})" if run.get("step") else "")),
            ("Mode", mode_words(run)),
            ("Submitted", f"{ago(run.get('created_at'))} by {run.get('submitted_by_person') or run.get('submitted_by')}"),
            ("Approvals", approvals_words(run)),
            ("Result", result_words(run)),
            ("Next", next_step(run, url))]
    width = max(len(label) for label, value in rows if value)
    for label, value in rows:
        if value:
            click.echo(f"{label + ':':<{width + 1}} {value}")
    for line in steps or []:
        click.echo("Steps:" if line == "steps:" else line)
    events = run.get("timeline") or [] if timeline else []
    if events:
        click.echo("Timeline:")
        times = [ago(e.get("created_at")) for e in events]
        pad = max(len(t) for t in times)
        for event, when in zip(events, times, strict=True):
            click.echo(f"  {when:>{pad}}  {_event_words(event)}")
    if timeline:
        click.echo(f"(the whole run, with document and request: aurora status {short_id(run['id'])} --json)")
