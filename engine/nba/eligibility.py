"""Which actions a customer may be offered now: one lookup on most events.

The eligibility conditions are CEL, and CEL is pure: the eligible set depends
only on the values the conditions read (``cart.value``, ``profile.orders``,
...). Those values repeat across customers and events far more than they
vary, so the set is remembered per tuple of the values all conditions read
together: an event costs reading them once and one dictionary lookup,
instead of one condition at a time, each reading its values afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.rules.context import Scope
from engine.rules.ruleset import Expression, remember

if TYPE_CHECKING:
    from engine.nba.book import CompiledAction


def holds(condition: Expression | None, scope: Scope) -> bool:
    """Whether a condition holds; no condition always does, and a CEL error
    is data: a condition that fails does not hold."""
    if condition is None:
        return True
    try:
        return condition.evaluate(scope) is True
    except Exception:
        return False


class Eligibility:
    """The eligible action ids of a book, in file order, the control always."""

    __slots__ = ("_actions", "_control", "_memo", "_needs")

    def __init__(self, actions: Sequence[CompiledAction], control: str) -> None:
        self._actions = tuple(actions)
        self._control = control
        names: dict[str, None] = {}
        for action in actions:
            if action.eligible is not None:
                names.update(dict.fromkeys(action.eligible.needs))
        self._needs = tuple(names)
        self._memo: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def of(self, scope: Scope) -> tuple[str, ...]:
        key = scope.inputs(self._needs)
        memo = self._memo
        try:
            return memo[key]
        except KeyError:
            pass
        except TypeError:  # a list or a map among the values: not remembered
            return self._evaluate(scope)
        eligible = self._evaluate(scope)
        remember(memo, key, eligible)
        return eligible

    def _evaluate(self, scope: Scope) -> tuple[str, ...]:
        control = self._control
        return tuple([a.id for a in self._actions if a.id == control or holds(a.eligible, scope)])
