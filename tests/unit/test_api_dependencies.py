"""No route of the API depends on a plain ``def``: FastAPI would run it in its
thread pool on every request (api/deps.py says what that cost)."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute

from api.routes import customers, events, health, links, metrics, recommendations, rules, segment

MODULES = (customers, events, health, links, metrics, recommendations, rules, segment)


def _is_async(call: Any) -> bool:
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else call.__call__
    return inspect.iscoroutinefunction(target)


def _sync_calls(dependant: Dependant) -> list[str]:
    found = []
    for dep in dependant.dependencies:
        if not _is_async(dep.call):
            found.append(getattr(dep.call, "__qualname__", repr(dep.call)))
        found += _sync_calls(dep)
    return found


def test_every_dependency_of_every_route_is_async() -> None:
    offenders: dict[str, list[str]] = {}
    routes = 0
    for module in MODULES:
        router = module.router
        for depends in router.dependencies:  # the router's own, on each of its routes
            assert depends.dependency is not None
            calls = _sync_calls(get_dependant(path="", call=depends.dependency))
            if not _is_async(depends.dependency):
                calls.append(depends.dependency.__qualname__)
            if calls:
                offenders[f"{module.__name__} router"] = calls
        for route in router.routes:
            assert isinstance(route, APIRoute)
            routes += 1
            calls = _sync_calls(route.dependant)
            if not _is_async(route.endpoint):
                calls.append(route.endpoint.__qualname__)
            if calls:
                offenders[route.path] = calls
    assert routes >= 15
    assert offenders == {}
