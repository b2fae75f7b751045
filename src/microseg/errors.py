"""Every exception microseg raises on purpose, in one tree.

    MicrosegError                      base; never raised itself
    ├── UserError                      the input is wrong; fix it and retry (exit code 2)
    │   ├── ValidationError            a value breaks a model invariant (bad label, bad CIDR, ...)
    │   ├── PolicyFileError            one or more problems in policy files, each with file:line:field
    │   │   └── ManifestError          the same for Kubernetes manifests (file:line, document, field)
    │   ├── LookupFailed               a name (workload, rule, tier, ...) that does not exist
    │   └── InexpressibleError         an export format cannot say what a rule means (names the rule)
    ├── PermanentError                 retrying will not help (a bug or an impossible request)
    └── TransientError                 retrying later may help (a busy resource, a lost connection)

The reconciler (agent) and the server use the PermanentError / TransientError split to decide
whether to retry with backoff. User errors carry enough context for a person to fix the input.
"""

from __future__ import annotations

from dataclasses import dataclass


class MicrosegError(Exception):
    """Base of every error microseg raises on purpose."""


class UserError(MicrosegError):
    """The input is wrong; the message says how."""


class ValidationError(UserError):
    """A value breaks a model invariant. `field` names the offending field when known."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Problem:
    """One problem found in a policy file: where it is and what is wrong."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class PolicyFileError(UserError):
    """All problems found while loading policy files; nothing was loaded."""

    what = "policy files"
    outcome = "nothing was loaded"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.field, p.message))
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in {self.what}; {self.outcome}"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


class ManifestError(PolicyFileError):
    """All problems found while reading Kubernetes manifests; nothing was used. Each problem's
    field starts with the document it is in: `document 2 (NetworkPolicy shop/allow-web)`."""

    what = "Kubernetes manifests"
    outcome = "nothing was used"


class LookupFailedError(UserError):
    """A name that does not exist (a workload, a rule, a tier, ...)."""


class InexpressibleError(UserError):
    """The chosen export format cannot express a rule exactly; nothing looser or stricter is emitted.
    `rules` names the rules involved (tier/name)."""

    def __init__(self, message: str, rules: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.rules = rules


class PermanentError(MicrosegError):
    """Retrying will not help."""


class TransientError(MicrosegError):
    """Retrying later may help."""
