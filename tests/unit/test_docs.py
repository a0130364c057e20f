"""Documentation that is generated or listed from code must match the code."""

from __future__ import annotations

from pathlib import Path

import msgspec

from engine.docs import events_markdown, schema_json
from pulse.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_event_docs_are_generated_from_the_current_model() -> None:
    """Run `python -m engine.docs` when this fails."""
    assert (ROOT / "docs" / "events.md").read_text() == events_markdown()
    assert (ROOT / "docs" / "event.schema.json").read_bytes() == schema_json()


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [f.name for f in msgspec.structs.fields(Settings) if f"`{f.name}`" not in readme]
    assert missing == [], f"settings missing from README's configuration table: {missing}"
