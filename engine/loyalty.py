"""The loyalty programme: points per unit spent and tiers by rolling spend.

Configured in ``rules/loyalty.yaml`` (parsed by the caller; the engine does no
I/O) and validated here with errors that name the field.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta


class LoyaltyError(ValueError):
    """The loyalty configuration is invalid; the message names the field."""


class Tier(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1)]
    min_spend: Annotated[float, Meta(ge=0)]


class LoyaltyProgram(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    points_per_unit: Annotated[float, Meta(ge=0, le=1e6)] = 1.0
    window_days: Annotated[int, Meta(ge=1, le=3660)] = 365
    tiers: tuple[Tier, ...] = (Tier("member", 0.0),)
    # Points expire this many days after the order that earned them (none: never).
    points_expire_days: Annotated[int, Meta(ge=1, le=36600)] | None = None

    def __post_init__(self) -> None:
        if not self.tiers:
            raise ValueError("tiers: at least one tier is needed")
        spends = [t.min_spend for t in self.tiers]
        if spends != sorted(spends) or len(set(spends)) != len(spends):
            raise ValueError("tiers: min_spend must increase strictly, lowest tier first")
        if spends[0] != 0:
            raise ValueError("tiers: the first tier must have min_spend 0")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError("tiers: tier names must be unique")

    @property
    def window_s(self) -> float:
        return self.window_days * 86400.0

    @property
    def points_expire_s(self) -> float | None:
        return None if self.points_expire_days is None else self.points_expire_days * 86400.0

    def tier_for(self, spend: float) -> str:
        name = self.tiers[0].name
        for tier in self.tiers:
            if spend >= tier.min_spend:
                name = tier.name
        return name

    def points_for(self, amount: float) -> int:
        return int(amount * self.points_per_unit)

    @classmethod
    def from_mapping(cls, data: Any, source: str = "loyalty") -> LoyaltyProgram:
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise LoyaltyError(f"{source}: {exc}") from None


DEFAULT_PROGRAM = LoyaltyProgram(
    tiers=(Tier("member", 0), Tier("silver", 250), Tier("gold", 1000), Tier("platinum", 5000)),
    points_expire_days=365,
)
