"""Invariants: statements about reachability that no policy version may break.

Two shapes cover the guard rails people write down in security standards:

- `never`: `from` never reaches `to` on `services` ("env=dev never reaches env=prod");
- `only`: only `from` reaches `to` on `services` ("only role=bastion reaches tcp/22").

They decide nothing about traffic themselves: the engine checks a policy against them before it is
provisioned, and the server checks observed flows against them as they arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from microseg.errors import ValidationError
from microseg.model.selectors import Peer
from microseg.model.services import Service


class Shape(StrEnum):
    """What an invariant says about `from`, `to` and `services`."""

    NEVER = "never"
    ONLY = "only"


@dataclass(frozen=True)
class Invariant:
    """One declared invariant."""

    name: str
    shape: Shape
    sources: tuple[Peer, ...]
    destinations: tuple[Peer, ...]
    services: tuple[Service, ...]
    description: str = ""

    def __post_init__(self) -> None:
        for field, value in (("from", self.sources), ("to", self.destinations), ("services", self.services)):
            if not value:
                raise ValidationError(f"invariant {self.name}: {field} needs at least one entry", field)

    def __str__(self) -> str:
        src = ",".join(map(str, self.sources))
        dst = ",".join(map(str, self.destinations))
        svc = ",".join(map(str, self.services))
        if self.shape is Shape.NEVER:
            return f"{src} never reaches {dst} on {svc}"
        return f"only {src} reaches {dst} on {svc}"
