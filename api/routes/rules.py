"""Rule validation for editors and the console: the same checks as `pulse rules check`."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Request

from api import auth, deps, ingest, schemas
from api.ingest import Collector
from api.problems import ProblemError, field_error
from engine.rules.validate import base_name, load
from pulse.rules_files import RulesFileError, rule_files
from pulse.settings import Settings

router = APIRouter(tags=["rules"], dependencies=[Depends(auth.require_read)])

_decode = msgspec.json.Decoder(schemas.RulesToValidate).decode


@router.post(
    "/v1/rules/validate",
    summary="Check rule files and report every problem with its line and column",
    response_model=None,
    openapi_extra=schemas.json_body("RulesToValidate"),
    responses={
        200: schemas.ok("RulesValidation", "The verdict, with every problem"),
        **schemas.problems(401, 403, 413, 415, 422),
    },
)
async def validate_rules(
    request: Request,
    collector: Annotated[Collector, Depends(deps.collector)],
    settings: Annotated[Settings, Depends(deps.settings)],
) -> Any:
    body = await collector.read_body(request)
    try:
        posted = _decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProblemError(
            422, "invalid request", str(exc), errors=[field_error(str(exc))]
        ) from None
    files: dict[str, str] = {}
    if not posted.alone:
        try:
            files = {base_name(name): text for name, text in rule_files(settings.rules_dir).items()}
        except RulesFileError:
            files = {}
    files.update({base_name(name): text for name, text in posted.files.items()})
    loaded = load(files)
    result = schemas.RulesValidation(
        valid=loaded.ok,
        version=loaded.rules.version if loaded.rules is not None else None,
        rules=len(loaded.rules.rules) if loaded.rules is not None else 0,
        problems=[
            schemas.RuleProblem(p.file, p.line, p.column, p.message, str(p))
            for p in loaded.problems
        ],
    )
    return ingest.json_response(result)
