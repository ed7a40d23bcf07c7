"""Validation against the ``fhir.resources`` R4B models (the reference path, not the hot path).

The gateway emits FHIR R4 (4.0.1) JSON; ``fhir.resources`` ships R4B (4.3.0) models, which accept
the same Observation, Device and Bundle content. Tests validate every resource the mapping emits
here, and ``bench/decode.py`` measures this path against the hot path (:mod:`gateway.fhir.jsonio`).
Importing this module loads pydantic models for all of FHIR: do it only where it is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir.resources.R4B import get_fhir_model_class


def r4b_model(resource: Mapping[str, Any]) -> Any:
    """The R4B model instance of ``resource``; raises ``pydantic.ValidationError`` if invalid."""
    return get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def r4b_json(resource: Mapping[str, Any]) -> str:
    """Validate ``resource`` with the R4B models and dump it as JSON (the reference path)."""
    text: str = r4b_model(resource).model_dump_json()
    return text
