"""The e-mail index's key: one per address whatever its case or spaces, never the address."""

from __future__ import annotations

from engine.email_index import digest, normalise, same


def test_case_and_spaces_make_no_other_address() -> None:
    assert digest(" Ann@Example.COM ") == digest("ann@example.com")
    assert normalise(" Ann@Example.COM ") == "ann@example.com"
    assert same("ANN@example.com", "ann@example.com") and not same("ann@example.com", None)


def test_the_key_does_not_show_the_address() -> None:
    key = digest("ann@example.com")
    assert "ann" not in key and len(key) == 64
    assert digest("bob@example.com") != key
