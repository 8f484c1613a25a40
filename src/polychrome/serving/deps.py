"""What routes get through dependencies: settings and the per-process service state."""

from __future__ import annotations

import dataclasses
import re

from fastapi import Request

from ..errors import PolychromeError
from ..settings import Settings
from .admission import AdmissionController
from .inference import MicroBatcher, PipelineCache
from .observability import Metrics


@dataclasses.dataclass
class ServiceState:
    """Built once per app (one per web process): warm models stay here."""

    settings: Settings
    metrics: Metrics
    cache: PipelineCache
    batcher: MicroBatcher
    device: str
    admission: AdmissionController  # bounds the inference routes (load shedding)


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def get_app_settings(request: Request) -> Settings:
    return request.app.state.service.settings


# A stored name, optionally with ":version" -- ASCII only, checked before any store call
# (str.isdigit() accepts "²", which int() then refuses).
_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}(:[0-9]{1,9})?\Z", re.ASCII)


def checked_ref(ref: str, what: str = "name") -> str:
    if not _REF_RE.match(ref):
        raise PolychromeError(f"invalid {what} {ref!r}: use 1-64 characters from A-Z a-z 0-9 "
                              ". _ - (optionally :VERSION)", code="bad_name")
    return ref
