"""A rule's conversion rate against its hold-out, with a confidence interval.

The dataflow counts, per rule, customers sent a message (``fired``), kept back
on purpose (``held_out``) and goal conversions of each group
(``converted:treated``, ``converted:holdout``). What a marketer wants to know
is whether sending made a difference: the difference of the two rates, and
how sure we are of it. A 95 % Wald interval on the difference of two
proportions is enough for a dashboard and needs no dependency; it is labelled
"not enough data" while either group is too small for it to mean anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959964
MIN_GROUP = 10  # below this the normal approximation says nothing useful


@dataclass(frozen=True)
class Lift:
    treated: int
    treated_converted: int
    holdout: int
    holdout_converted: int

    @property
    def treated_rate(self) -> float | None:
        return self.treated_converted / self.treated if self.treated else None

    @property
    def holdout_rate(self) -> float | None:
        return self.holdout_converted / self.holdout if self.holdout else None

    @property
    def difference(self) -> float | None:
        """Treated rate less hold-out rate (percentage points / 100)."""
        t, h = self.treated_rate, self.holdout_rate
        return None if t is None or h is None else t - h

    @property
    def interval(self) -> tuple[float, float] | None:
        """95 % interval of the difference, or None while a group is too small."""
        t, h, d = self.treated_rate, self.holdout_rate, self.difference
        if t is None or h is None or d is None:
            return None
        if self.treated < MIN_GROUP or self.holdout < MIN_GROUP:
            return None
        se = math.sqrt(t * (1 - t) / self.treated + h * (1 - h) / self.holdout)
        return d - Z95 * se, d + Z95 * se

    def describe(self) -> str:
        """One line for a table cell."""
        d, ci = self.difference, self.interval
        if d is None:
            return "no hold-out" if not self.holdout else "nothing sent"
        if ci is None:
            return f"{d * 100:+.1f} pts (not enough data)"
        return f"{d * 100:+.1f} pts [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]"


def lift_of(counts: dict[str, int]) -> Lift:
    """From one rule's decision counts (dataflows/rule_stats.py)."""
    return Lift(
        treated=counts.get("fired", 0),
        treated_converted=counts.get("converted:treated", 0),
        holdout=counts.get("held_out", 0),
        holdout_converted=counts.get("converted:holdout", 0),
    )
