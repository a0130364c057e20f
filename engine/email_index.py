"""Finding a customer by e-mail address: the address's digest, as the index keys it.

The index (Redis, written by the dataflow: dataflows/redis_sink.py) is keyed
by a digest of the normalised address rather than the address, so listing
keys does not list addresses. Case and surrounding spaces do not make another
address; the local part is otherwise kept as written (some mail servers tell
``Ann`` from ``ann``, but no shop does).
"""

from __future__ import annotations

import hashlib


def normalise(address: str) -> str:
    return address.strip().lower()


def digest(address: str) -> str:
    """The index key of an address (hex SHA-256 of the normalised address)."""
    return hashlib.sha256(normalise(address).encode()).hexdigest()


def same(address: str, other: str | None) -> bool:
    return other is not None and normalise(address) == normalise(other)
