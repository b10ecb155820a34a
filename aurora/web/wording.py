"""The approval page's words for a shop owner, in the page's language (Flask-Babel): money as
money, what a run will do (or did) in one sentence, statuses and events by name, and the message
after a vote that fits the run's state when the page is shown.

Only the page uses this; the API and the CLI keep their exact, English fields.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import format_currency
from flask_babel import get_locale, gettext, ngettext

from ..money import exponent


def money(amount: Any, currency: str, minor: bool = False) -> str:
    """``("150.00", "EUR")`` -> ``150,00 €`` (German) or ``€150.00`` (English); ``minor``: the
    amount is in the currency's smallest unit (Stripe's ``15000`` cents)."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        return f"{amount} {currency.upper()}"
    if minor:
        value = value.scaleb(-exponent(currency))
    return format_currency(value, currency.upper(), locale=str(get_locale() or "en"))


def status_name(status: str) -> str:
    names = {
        "queued": gettext("queued"), "running": gettext("in progress"),
        "awaiting_approval": gettext("waiting for approval"), "succeeded": gettext("done"),
        "failed": gettext("failed"), "rejected": gettext("rejected"), "expired": gettext("expired"),
        "cancelled": gettext("cancelled"), "needs_reconciliation": gettext("check with the provider"),
        "not_acted": gettext("not carried out"),
    }
    return names.get(status, status.replace("_", " "))


def event_name(kind: str) -> str:
    """``run.queued`` -> "Queued"; an unknown event keeps its name."""
    names = {
        "run.queued": gettext("Queued"), "run.running": gettext("Started"),
        "run.awaiting_approval": gettext("Waiting for approval"), "run.succeeded": gettext("Done"),
        "run.failed": gettext("Failed"), "run.rejected": gettext("Rejected: it will not happen"),
        "run.expired": gettext("Expired: nobody approved in time"), "run.cancelled": gettext("Cancelled"),
        "run.needs_reconciliation": gettext("Outcome unknown: check with the provider"),
        "run.not_acted": gettext("Not carried out"), "run.requeued": gettext("Sent to a worker again"),
        "run.lease_lost": gettext("A worker stopped; another one takes over"),
        "run.blocked": gettext("Blocked"), "run.settled": gettext("Confirmed by the provider"),
        "run.settlement_kept": gettext("Provider's confirmation kept"),
        "approval.approved": gettext("Approval"), "approval.rejected": gettext("Rejection"),
        "approval.voided": gettext("A vote no longer counts"),
        "approval.notified": gettext("Approvers notified"),
        "adapter.rolled_back": gettext("Switched back to simulated"),
    }
    return names.get(kind, kind)


def _recipients(payload: dict[str, Any]) -> str:
    to = payload.get("to")
    return ", ".join(to) if isinstance(to, list) else str(to or "")


def _platform(payload: dict[str, Any]) -> str:
    return str(payload.get("platform", "")).capitalize()


def what(goal: str, payload: dict[str, Any], tense: str) -> str:
    """The run in one sentence: ``tense`` is ``will`` (before it acts), ``did`` (it acted live)
    or ``would`` (it was simulated)."""
    if goal == "charge":
        amount = money(payload.get("amount", ""), str(payload.get("currency", "")))
        customer = payload.get("customer", "")
        return {"will": gettext("Stripe will charge %(amount)s to customer %(customer)s.", amount=amount,
                                customer=customer),
                "did": gettext("Stripe charged %(amount)s to customer %(customer)s.", amount=amount,
                               customer=customer),
                "would": gettext("Stripe would have charged %(amount)s to customer %(customer)s.", amount=amount,
                                 customer=customer)}[tense]
    if goal == "send_email":
        to, subject = _recipients(payload), payload.get("subject", "")
        return {"will": gettext("Mailgun will send the email “%(subject)s” to %(to)s.", subject=subject, to=to),
                "did": gettext("Mailgun sent the email “%(subject)s” to %(to)s.", subject=subject, to=to),
                "would": gettext("Mailgun would have sent the email “%(subject)s” to %(to)s.", subject=subject,
                                 to=to)}[tense]
    if goal == "post_external":
        platform = _platform(payload)
        return {"will": gettext("This post will be published on %(platform)s, for everyone to see.",
                                platform=platform),
                "did": gettext("The post was published on %(platform)s.", platform=platform),
                "would": gettext("The post would have been published on %(platform)s.", platform=platform)}[tense]
    if goal == "analyse":
        return {"will": gettext("The text goes to an AI engine for an analysis."),
                "did": gettext("An AI engine analysed the text."),
                "would": gettext("The text would have gone to an AI engine for an analysis.")}[tense]
    if goal == "workflow":
        return {"will": gettext("A workflow of several steps: each step is shown below."),
                "did": gettext("The workflow's steps ran: each step is shown below."),
                "would": gettext("The workflow's steps ran, simulated: each step is shown below.")}[tense]
    if goal == "ingest_forms":
        form = payload.get("form_id", "")
        return {"will": gettext("The answers of Typeform form %(form)s will be fetched.", form=form),
                "did": gettext("The answers of Typeform form %(form)s were fetched.", form=form),
                "would": gettext("The answers of Typeform form %(form)s would have been fetched.", form=form)}[tense]
    return goal


def mode_says(live: bool) -> str:
    if live:
        return gettext("This really happens once it is approved: real money, a real email, a public post.")
    return gettext("Nothing is really sent: Aurora only shows what it would send.")


def label(name: str) -> tuple[str, bool]:
    """A label of ``aurora.binding.plain`` in the page's language, and whether it is one Aurora
    knows (the others are the provider's own field names, shown as they are)."""
    labels = {
        "Amount": gettext("Amount"), "Sends": gettext("Request to"), "From": gettext("From"), "To": gettext("To"),
        "Subject": gettext("Subject"), "Text": gettext("Text"), "HTML part": gettext("HTML part"),
        "Template": gettext("Template"), "Template variables": gettext("Template variables"),
        "Customer": gettext("Customer"), "Payment method": gettext("Payment method"),
        "Description": gettext("Description"), "Post text": gettext("Post text"), "Caption": gettext("Caption"),
        "Link": gettext("Link"), "Image URL": gettext("Image URL"), "Model": gettext("Model"),
        "Max tokens": gettext("Max tokens"), "Engines, in order": gettext("Engines, in order"),
        "Platform": gettext("Platform"), "Recipients": gettext("Recipients"),
    }
    if name.startswith("Step ") and name[5:].isdigit():
        return gettext("Step %(number)s", number=name[5:]), True
    return labels.get(name, name), name in labels


def rows(goal: str, payload: dict[str, Any], plain: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The request's fields for the page: every one of them (what is sent must never be hidden),
    the amount as money, Aurora's labels in words, the provider's own field names marked."""
    out = []
    for row in plain:
        value = row["value"]
        if row["label"] == "Amount" and goal == "charge":
            value = money(payload.get("amount", ""), str(payload.get("currency", "")))
        text, known = label(row["label"])
        out.append({"label": text, "value": value, "amount": row["label"] == "Amount", "technical": not known})
    return out


def _names(people: list[str]) -> str:
    return ", ".join(people)


def approvals_line(approvals: dict[str, Any]) -> str:
    """Where the votes stand, for a run that waits."""
    received, required = approvals.get("received", 0), approvals.get("required", 0)
    text = gettext("%(received)s of %(required)s approvals", received=received, required=required)
    if approvals.get("approvers"):
        text += " (" + gettext("approved by %(names)s", names=_names(approvals["approvers"])) + ")"
    missing = approvals.get("missing", 0)
    if missing:
        text += "; " + ngettext("%(num)s more needed", "%(num)s more needed", missing)
    return text


def outcome(run: dict[str, Any]) -> str:
    """What happened, in words, for a run that no longer waits; empty for one that waits."""
    status, payload, goal = run["status"], run["document"].get("payload", {}), run["goal"]
    error = run.get("error") or {}
    approvals = run.get("approvals") or {}
    if status == "succeeded":
        if run.get("mode") == "live":
            text = what(goal, payload, "did")
            response = (run.get("result") or {}).get("response") or {}
            if goal == "charge" and response.get("amount") is not None and response.get("currency"):
                text = gettext("Stripe charged %(amount)s to customer %(customer)s.",
                               amount=money(response["amount"], response["currency"], minor=True),
                               customer=payload.get("customer", ""))
            return text
        return what(goal, payload, "would")
    if status == "rejected":
        votes = [v for v in approvals.get("votes", []) if v.get("decision") == "reject"]
        who = approvals.get("rejected_by") or (votes[-1]["person"] if votes else "")
        comment = next((v.get("comment") for v in reversed(votes) if v.get("comment")), None)
        text = gettext("Rejected by %(who)s.", who=who) if who else gettext("Rejected.")
        if comment:
            text += " " + gettext("Their comment: “%(comment)s”.", comment=comment)
        return text + " " + gettext("Nothing was sent.")
    if status == "expired":
        return gettext("Nobody approved it before the deadline. Nothing was sent.")
    if status == "cancelled":
        return gettext("Cancelled before it acted. Nothing was sent.")
    if status == "failed":
        sent = gettext("A live call failed.") if run.get("mode") == "live" else gettext("Nothing was sent.")
        return gettext("It failed: %(why)s.", why=error.get("message") or error.get("type") or "?") + " " + sent
    if status == "not_acted":
        return gettext("Not carried out: it would only have been simulated, and a payment or post must "
                       "not pretend. Nothing was sent.")
    if status == "needs_reconciliation":
        return gettext("Aurora cannot tell whether the provider acted: please check with the provider.")
    if status in ("queued", "running"):
        return gettext("Aurora is carrying it out now.")
    return ""


def vote_message(code: str, run: dict[str, Any] | None) -> str:
    """The message after a vote, written when the page is shown so that it fits the run's state
    then: ``approve:N`` (N approvals still needed), ``approve:done``, ``reject``."""
    if code == "reject":
        return gettext("Your rejection is recorded: the run will not be carried out.")
    if code.startswith("approve:") and code != "approve:done":
        missing = int(code.split(":", 1)[1] or 0)
        return gettext("Your approval is recorded.") + " " + ngettext(
            "%(num)s more approval is needed.", "%(num)s more approvals are needed.", missing)
    status = (run or {}).get("status", "queued")
    text = gettext("Your approval is recorded and was the last one needed.")
    if status in ("queued", "running"):
        return text + " " + gettext("Aurora is carrying out the run now.")
    if status == "succeeded":
        if (run or {}).get("mode") == "live":
            return text + " " + gettext("The run has been carried out.")
        return text + " " + gettext("The run has been carried out as a simulation: nothing was sent.")
    return text + " " + gettext("The run then ended as “%(status)s”: see below.", status=status_name(status))


def vote_error(code: str, message: str) -> str:
    """A refused vote in the page's language; a refusal without words of its own keeps Aurora's."""
    words = {
        "self_approval": gettext("You submitted this run (with one of your keys): somebody else must approve "
                                 "or reject it."),
        "already_voted": gettext("You have already voted on this run (a person votes once, with any of "
                                 "their keys)."),
        "gate_closed": gettext("This run no longer waits for votes."),
        "request_changed": gettext("What this run would send, or whether it is live, changed since you looked. "
                                   "Please look at it again and vote on what it sends now."),
        "forbidden": gettext("Your key may not vote on this run."),
    }
    return words.get(code, message)
