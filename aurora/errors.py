"""Every error Aurora raises on purpose descends from one root.

    AuroraError
    ├── ConfigError            a setting or file Aurora needs is missing or wrong
    │   ├── PolicyError        the policy file does not validate
    │   ├── SecretsError       the secrets file is unsafe or malformed
    │   ├── AuditKeyError      the audit chain's key file is unsafe, malformed or missing
    │   └── BackupError        a secrets backup cannot be made, decrypted or restored
    ├── DocumentError          a submitted workflow cannot be accepted (carries a list of problems)
    │   ├── DocumentTooLarge   the body is larger than the configured limit
    │   └── DocumentSyntaxError  the body is not well-formed YAML/JSON/UTF-8
    ├── AuthError              a request carries no valid API key
    │   └── PermissionDenied   the key is valid but its role may not do this
    ├── NotFound               a run, key or other record does not exist
    ├── Conflict               the request is valid but the record's state forbids it now
    ├── InvalidName            a person's name is not one Aurora can tell apart from others
    ├── IdempotencyKeyError    an Idempotency-Key header is malformed
    │   └── IdempotencyKeyReused  the key was used before with another request body
    ├── Unavailable            a component (database, disk, broker) cannot serve now: retry later
    ├── ClientError            the CLI got an error answer from the server, or none
    └── AdapterError           an adapter call could not be made or failed
        └── AmountError        a money amount cannot be represented exactly in its currency
"""

from __future__ import annotations

from dataclasses import dataclass


class AuroraError(Exception):
    """Raised for every error Aurora means to report; the root of the tree above."""

    #: short machine-readable code used in JSON error bodies
    code = "aurora_error"


class ConfigError(AuroraError):
    """Raised when a setting or a configuration file is missing or invalid."""

    code = "config_error"


class PolicyError(ConfigError):
    """Raised when the policy file cannot be read or does not validate."""

    code = "policy_error"


class AuditKeyError(ConfigError):
    """Raised when the audit chain's key file is unsafe, malformed or missing."""

    code = "audit_key_error"


class BackupError(ConfigError):
    """Raised when a secrets backup cannot be made, read, decrypted or restored."""

    code = "backup_error"


class SecretsError(ConfigError):
    """Raised when the secrets file is readable by others or malformed."""

    code = "secrets_error"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: where (a dotted path, and the line and column of the YAML
    or JSON node it came from when known), what, and what usually fixes it."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None
    hint: str | None = None

    def as_dict(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {"path": self.path, "message": self.message}
        if self.line is not None:
            out.update(line=self.line, column=self.column or 1)
        if self.hint:
            out["hint"] = self.hint
        return out

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.line is not None:
            text += f" (line {self.line}, column {self.column or 1})"
        return text + (f"; {self.hint}" if self.hint else "")


class DocumentError(AuroraError):
    """Raised when a submitted workflow document is invalid; carries every problem found."""

    code = "invalid_workflow"

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class DocumentSyntaxError(DocumentError):
    """Raised when the body is not well-formed UTF-8 YAML or JSON, or uses forbidden constructs."""

    code = "malformed_workflow"


class DocumentTooLarge(DocumentError):
    """Raised when the body exceeds the configured size limit."""

    code = "workflow_too_large"


class AuthError(AuroraError):
    """Raised when a request has no API key or an unknown or revoked one."""

    code = "unauthorized"


class PermissionDenied(AuthError):
    """Raised when the API key is valid but its role does not allow the action."""

    code = "forbidden"


class NotFound(AuroraError):
    """Raised when the requested record does not exist."""

    code = "not_found"


class Conflict(AuroraError):
    """Raised when the record exists but its current state forbids the action."""

    code = "conflict"


class InvalidName(AuroraError):
    """Raised when a person's name is empty or has characters a quorum could be fooled by."""

    code = "invalid_name"
    http_status = 400


class IdempotencyKeyError(AuroraError):
    """Raised when an ``Idempotency-Key`` header is empty, too long or not printable ASCII."""

    code = "invalid_idempotency_key"
    http_status = 400


class IdempotencyKeyReused(IdempotencyKeyError):
    """Raised when an ``Idempotency-Key`` comes again with a different request body."""

    code = "idempotency_key_reused"
    http_status = 422


class Unavailable(AuroraError):
    """Raised when the database, the disk or the broker cannot serve the request now.

    Not the caller's fault and not a bug: the answer is 503 with ``Retry-After``, naming the part
    that failed, so a client or load balancer knows to try again instead of giving up."""

    code = "unavailable"
    http_status = 503

    def __init__(self, component: str, message: str, retry_after: int = 5):
        super().__init__(message)
        self.component = component
        self.retry_after = retry_after


class AdapterError(AuroraError):
    """Raised when an adapter cannot build or make its call."""

    code = "adapter_error"


class AmountError(AdapterError):
    """Raised when an amount is a float, malformed, or too precise for its currency."""

    code = "invalid_amount"


class ClientError(AuroraError):
    """Raised when the server answers the CLI with an error or cannot be reached."""

    code = "client_error"

    def __init__(self, message: str, status: int | None = None, body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.body = body or {}
