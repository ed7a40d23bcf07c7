"""``bedside patient set|show|clear``: the runtime patient assignment.

The commands write the assignment file in the data directory (mode 0600); a running gateway
sees the change at its next reading (and applies a claim within a second). They do not need the
gateway to run. ``--config`` (or ``BEDSIDE_*``) gives the configured patient that ``clear``
returns to. Exit status: 0 success; 2 a usage or input error, one line on stderr.
docs/contracts.md, "Patient".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.command_options import ConfigOption, DataDirOption, fail
from gateway.errors import BedsideError
from gateway.fhir.observation import PatientRef
from gateway.patients.assignment import (
    PatientAssignment,
    PatientError,
    parse_identifier,
    patient_ref,
)
from gateway.store.store import Store, store_path

patient_app = typer.Typer(
    help="The patient this gateway's readings belong to.", no_args_is_help=True
)


def _assignment(config: Path | None, data_dir: Path | None) -> PatientAssignment:
    from gateway.config import load_settings

    try:
        settings = load_settings(config, data_dir=data_dir)
    except BedsideError as exc:
        fail(str(exc))
    configured = settings.patient
    return PatientAssignment(
        settings.data_dir,
        None
        if configured is None
        else PatientRef(
            configured.reference, configured.identifier_system, configured.identifier_value
        ),
    )


def _held(data_dir: Path) -> dict[str, int]:
    path = store_path(data_dir)
    if not path.exists():
        return {"held": 0, "held_readings": 0}
    try:
        with Store(path) as store:
            stats = store.outbox_stats()
    except BedsideError as exc:
        fail(str(exc))
    return {"held": stats.held, "held_readings": stats.held_readings}


def _print(assignment: PatientAssignment) -> None:
    shown: dict[str, Any] = assignment.show() | _held(assignment.path.parent)
    typer.echo(json.dumps(shown, indent=2))


@patient_app.command("set")
def patient_set(
    reference: Annotated[
        str, typer.Option("--reference", help="FHIR reference, e.g. Patient/123.")
    ],
    identifier: Annotated[
        str | None,
        typer.Option("--identifier", help="The patient's identifier as SYSTEM|VALUE."),
    ] = None,
    claim_held: Annotated[
        bool,
        typer.Option(
            "--claim-held",
            help="Give this patient the readings held since the previous patient was cleared.",
        ),
    ] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Assign the patient; readings from now on are theirs (earlier ones are never re-labelled)."""
    try:
        patient = patient_ref(reference, parse_identifier(identifier) if identifier else None)
    except PatientError as exc:
        fail(str(exc))
    assignment = _assignment(config, data_dir)
    try:
        assignment.set(patient, claim_held=claim_held)
    except PatientError as exc:
        fail(str(exc))
    _print(assignment)


@patient_app.command("show")
def patient_show(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Print the patient (runtime or configured) and the readings held for want of one."""
    _print(_assignment(config, data_dir))


@patient_app.command("clear")
def patient_clear(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Remove the runtime patient: back to the configured one, or none (readings are held)."""
    assignment = _assignment(config, data_dir)
    try:
        assignment.clear()
    except PatientError as exc:
        fail(str(exc))
    _print(assignment)


def register(app: typer.Typer) -> None:
    """Add ``patient`` to the ``bedside`` app."""
    app.add_typer(patient_app, name="patient")
