"""Which offset of a partition a dispatcher may commit while it sends many
triggers at once.

Triggers finish out of order (a slow endpoint, a retry, a customer's earlier
message still going), but a committed offset says "everything before this is
done": committing past an unfinished trigger would lose it in a crash. So each
partition keeps the offsets it read, in reading order, and the commit point
only moves past a run of finished ones from the oldest on. Offsets need not be
consecutive (compaction, transaction markers): the order read is what counts.
"""

from __future__ import annotations

from collections import deque


class PartitionProgress:
    """The offsets of one partition read and not yet committed."""

    def __init__(self) -> None:
        self._uncommittable: deque[int] = deque()  # read, from the oldest unfinished on
        self._finished_early: set[int] = set()  # finished while an older one is not
        self._done_up_to: int | None = None  # the offset after the oldest run of finished
        self.committed: int | None = None  # the last offset committed for the partition

    def read(self, offset: int) -> None:
        if self._uncommittable and offset <= self._uncommittable[-1]:
            raise ValueError(f"offset {offset} read after {self._uncommittable[-1]}")
        if self._done_up_to is not None and offset < self._done_up_to:
            raise ValueError(f"offset {offset} read again below {self._done_up_to}")
        self._uncommittable.append(offset)

    def finish(self, offset: int) -> None:
        self._finished_early.add(offset)
        while self._uncommittable and self._uncommittable[0] in self._finished_early:
            oldest = self._uncommittable.popleft()
            self._finished_early.discard(oldest)
            self._done_up_to = oldest + 1

    @property
    def unfinished(self) -> int:
        """Offsets read and not finished."""
        return len(self._uncommittable) - len(self._finished_early)

    def commit_due(self) -> int | None:
        """The offset to commit now (the one after the last of the oldest run
        of finished offsets), or None when that is already committed."""
        if self._done_up_to is None or self._done_up_to == self.committed:
            return None
        return self._done_up_to
