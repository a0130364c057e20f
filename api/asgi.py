"""The app as an import target for ASGI servers that import it themselves in
their worker processes (granian; uvicorn with ``factory=True``): settings come
from the environment and config file, as for every ``pulse`` command."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from pulse.settings import load_settings


def from_environment() -> FastAPI:
    """``create_app`` with the settings of ``PULSE_*`` and ``PULSE_CONFIG``."""
    return create_app(load_settings())
