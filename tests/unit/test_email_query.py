"""The e-mail query's pattern means the same to the API and to its OpenAPI document."""

from __future__ import annotations

import re

from api.routes.customers import EMAIL_PATTERN


def test_the_pattern_refuses_the_spaces_both_dialects_know_and_nothing_else() -> None:
    # ECMA-262 (the document) and Python (the check) agree on these ...
    for refused in ("a b@example.com", "a@b\tc", "a\n@b", "@example.com", "a@", "a@b@c"):
        assert re.fullmatch(EMAIL_PATTERN, refused) is None, refused
    # ... while Python's \s would also refuse U+0085 and U+001C, which the
    # document's \s allows: schemathesis sent one and got a 422.
    for accepted in ("erin@example.com", "a\x85b@example.com", "a\x1cb@c"):
        assert re.fullmatch(EMAIL_PATTERN, accepted) is not None, accepted
