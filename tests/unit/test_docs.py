"""Documentation that is generated or listed from code must match the code."""

from __future__ import annotations

from pathlib import Path

import msgspec

from engine.docs import events_markdown, schema_json
from engine.rules import docs as rule_docs
from engine.rules.validate import NOT_RULES, POLICY_FILE
from pulse.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_event_docs_are_generated_from_the_current_model() -> None:
    """Run `python -m engine.docs` when this fails."""
    assert (ROOT / "docs" / "events.md").read_text() == events_markdown()
    assert (ROOT / "docs" / "event.schema.json").read_bytes() == schema_json()


def test_rule_docs_are_generated_from_the_current_model() -> None:
    """Run `python -m engine.rules.docs` (or `pulse rules schema`) when this fails."""
    for name, kind in rule_docs.SCHEMAS.items():
        assert (ROOT / "docs" / name).read_bytes() == rule_docs.schema_json(kind), name
    assert (ROOT / "docs" / "rule-fields.md").read_text() == rule_docs.fields_markdown()


def _schema_comments() -> dict[Path, str]:
    """Each YAML file of rules/ that has a schema, and the schema it must point at."""
    rules = ROOT / "rules"
    wanted: dict[Path, str] = {}
    for path in sorted([*rules.glob("*.yaml"), *rules.glob("*.yml")]):
        if path.name == POLICY_FILE:
            wanted[path] = "policy.schema.json"
        elif path.name not in NOT_RULES:  # loyalty.yaml and rfm.yaml have no schema
            wanted[path] = "rule.schema.json"
    for path in sorted([*(rules / "tests").glob("*.yaml"), *(rules / "tests").glob("*.yml")]):
        wanted[path] = "rule-test.schema.json"
    return wanted


def test_every_rule_file_points_editors_at_its_schema() -> None:
    """Rule files, policy.yaml and rule tests start with the yaml-language-server
    comment naming their JSON Schema, by a path that exists from the file."""
    wanted = _schema_comments()
    assert any(schema == "rule.schema.json" for schema in wanted.values())
    wrong = []
    for path, schema in wanted.items():
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
        target = (ROOT / "docs" / schema).resolve()
        reference = first.removeprefix("# yaml-language-server: $schema=")
        if reference == first or (path.parent / reference).resolve() != target:
            wrong.append(f"{path.relative_to(ROOT)}: first line {first!r}")
    assert wrong == [], "missing or wrong schema comments:\n" + "\n".join(wrong)


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [f.name for f in msgspec.structs.fields(Settings) if f"`{f.name}`" not in readme]
    assert missing == [], f"settings missing from README's configuration table: {missing}"
