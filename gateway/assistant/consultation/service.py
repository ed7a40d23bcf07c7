"""The consultations of this gateway: created, found (live or archived) and closed, closing
being the signed draft report (:mod:`gateway.assistant.report`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from gateway.assistant.archive import ConsultationArchive
from gateway.assistant.backend import LlmEngine
from gateway.assistant.consultation.conversation import Consultation, ConsultationDeps
from gateway.assistant.consultation.errors import (
    ConsultationClosedError,
    ConsultationInputError,
    ConsultationNotFoundError,
    ReportError,
)
from gateway.assistant.consultation.observations import UsedObservation
from gateway.assistant.consultation.ports import (
    DeviceResolver,
    DraftSink,
    DraftStore,
    RetrieverLike,
    SensorProfile,
    Sensors,
)
from gateway.assistant.consultation.reply import Reply
from gateway.assistant.errors import EngineError
from gateway.assistant.grammars import json_schema
from gateway.assistant.guards import PassageText, check_medication, drop_copies
from gateway.assistant.prompts import is_loinc_code, prompt_version
from gateway.assistant.report import (
    REPORT_ORDER,
    DraftInputs,
    ModelIdentity,
    ReportContent,
    ReportFormatError,
    build_draft,
    fallback_schema,
    parse_report,
    report_schema,
)
from gateway.assistant.settings import ConsultationSettings
from gateway.fhir.device import GatewayInfo
from gateway.fhir.observation import PatientRef
from gateway.fhir.resource import MappedResource, fhir_datetime
from gateway.rag.errors import RagError
from gateway.store import BundleSigner
from gateway.store.models import TopicKind

log = logging.getLogger(__name__)

HASH_CHUNK: Final = 1 << 20


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ConsultationService:
    """Creates, finds and closes consultations; see :mod:`gateway.assistant.consultation` for
    the wiring. ``profiles`` (sensor kind → its device profile) say which codes can be required
    and how long a measurement of each kind may take."""

    def __init__(
        self,
        engine: LlmEngine,
        sensors: Sensors,
        *,
        gateway: GatewayInfo,
        signer: BundleSigner,
        store: DraftStore | None = None,
        retriever: RetrieverLike | None = None,
        patient: PatientRef | None = None,
        settings: ConsultationSettings | None = None,
        devices: DeviceResolver | None = None,
        profiles: Mapping[str, SensorProfile] | None = None,
        archive_dir: Path | None = None,
        drafts: DraftSink | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.engine = engine
        self.settings = settings or ConsultationSettings()
        self.gateway = gateway
        self.patient = patient
        self._signer = signer
        self._store = store
        self._devices = devices
        self.drafts = drafts
        self._clock = clock
        profiles = profiles or {}
        self._deps = ConsultationDeps(
            engine=engine,
            sensors=sensors,
            settings=self.settings,
            retriever=retriever,
            store=store,
            codes_by_kind={kind: tuple(p.loinc) for kind, p in profiles.items()},
            measure_timeouts={kind: p.measure.timeout_s for kind, p in profiles.items()},
            clock=clock,
        )
        self._archive = ConsultationArchive(archive_dir) if archive_dir is not None else None
        self._consultations: dict[str, Consultation] = {}
        self._model: ModelIdentity | None = None

    @property
    def known_codes(self) -> frozenset[str] | None:
        """The codes some sensor profile measures (None: not configured, anything goes)."""
        if not self._deps.codes_by_kind:
            return None
        return frozenset(c for codes in self._deps.codes_by_kind.values() for c in codes)

    def create(self, require: Sequence[str] = ()) -> Consultation:
        """A new open consultation; ``require``: LOINC codes to measure before the first answer."""
        codes = list(dict.fromkeys(require))
        limit = self.settings.max_require
        if len(codes) > limit:
            raise ConsultationInputError(f"require: at most {limit} codes")
        bad = [c for c in codes if not isinstance(c, str) or not is_loinc_code(c)]
        if bad:
            raise ConsultationInputError(
                f"require: {', '.join(map(repr, bad))} are not LOINC codes (like 8867-4)"
            )
        known = self.known_codes
        if known is not None:
            unknown = [c for c in codes if c not in known]
            if unknown:
                raise ConsultationInputError(
                    f"require: no sensor profile measures {', '.join(unknown)}; known codes: "
                    f"{', '.join(sorted(known))}"
                )
        cid = str(uuid.uuid4())
        consultation = Consultation(cid, self._deps, codes, self._clock(), self._save)
        self._consultations[cid] = consultation
        return consultation

    def get(self, cid: str) -> Consultation:
        try:
            return self._consultations[cid]
        except KeyError:
            raise ConsultationNotFoundError(cid) from None

    def consultations(self) -> list[Consultation]:
        return list(self._consultations.values())

    async def history(self) -> list[dict[str, Any]]:
        """Every consultation, of this run and archived earlier, newest first: ``{"id",
        "status", "busy", "created", "closed"}``."""
        rows = {r["id"]: r | {"busy": False} for r in await self._archived()}
        for c in self._consultations.values():
            snapshot = c.snapshot()
            rows[c.id] = {k: snapshot[k] for k in ("id", "status", "busy", "created", "closed")}
        return sorted(rows.values(), key=lambda r: (str(r["created"]), r["id"]), reverse=True)

    async def _archived(self) -> list[dict[str, Any]]:
        return await self._archive.summaries() if self._archive is not None else []

    async def snapshot(self, cid: str) -> dict[str, Any]:
        """The record of a consultation of this session, or one archived earlier."""
        consultation = self._consultations.get(cid)
        if consultation is not None:
            return consultation.snapshot()
        record = await self._archive.load(cid) if self._archive is not None else None
        if record is None:
            raise ConsultationNotFoundError(cid)
        return record

    async def _live(self, cid: str) -> Consultation:
        consultation = self._consultations.get(cid)
        if consultation is not None:
            return consultation
        record = await self._archive.load(cid) if self._archive is not None else None
        if record is None:
            raise ConsultationNotFoundError(cid)
        if record.get("status") == "closed":
            raise ConsultationClosedError(cid)
        raise ConsultationClosedError(cid, "belongs to an earlier run of the gateway")

    async def send(self, cid: str, content: str) -> Reply:
        """:meth:`Consultation.send` by id (an archived consultation takes no messages)."""
        return (await self._live(cid)).send(content)

    async def close(self, cid: str) -> dict[str, Any]:
        """Draft the report, build, sign and enqueue the Bundle; returns it signed."""
        consultation = await self._live(cid)
        consultation.begin_close()
        try:
            content, dropped = drop_copies(await self._draft_content(consultation))
            passages = consultation.passages + await self._formulary(cid, content)
            checks = tuple(check_medication(m, passages) for m in content.medications)
            if dropped:
                log.info(
                    "consultation %s: dropped %d text(s) copying the gateway's instructions",
                    cid,
                    len(dropped),
                )
                consultation.record(
                    {
                        "role": "guard",
                        "at": fhir_datetime(self._clock()),
                        "dropped": dropped,
                    }
                )
            issued = self._clock()
            observations = consultation.observations
            devices = self._sensor_devices(observations)
            draft = build_draft(
                DraftInputs(
                    consultation_id=cid,
                    content=content,
                    observations=[o.mapped for o in observations],
                    gateway=self.gateway,
                    model=await self.model_identity(),
                    started=consultation.created,
                    issued=issued,
                    devices=devices,
                    patient=self.patient,
                    checks=checks,
                    citations=consultation.citations,
                    prompt_version=prompt_version(),
                )
            )
            if self.drafts is not None:  # under review: recorded, signed and forwarded there
                signed = await self.drafts.add_draft(cid, draft.bundle)
            else:
                signed = self._signer.sign_bundle(draft.bundle)
                if self._store is not None:
                    await self._store.enqueue_bundle(TopicKind.DRAFTS, signed)
            consultation.closed = issued
            consultation.draft = signed
            if await self._save(consultation):
                # Archived: read from there from now on. A gateway runs for months; what it
                # keeps in memory is what is open, not every consultation it ever held.
                self._consultations.pop(cid, None)
            return signed
        finally:
            consultation.end_close()

    async def _draft_content(self, consultation: Consultation) -> ReportContent:
        settings = self.settings
        codes = sorted({o.code for o in consultation.observations})
        prompt = consultation.report_prompt()
        attempts = (
            (report_schema(codes), settings.report_max_tokens),
            (fallback_schema(), settings.report_fallback_max_tokens),
        )
        problem = "no attempt"
        for schema, max_tokens in attempts:
            try:
                finished = await self.engine.complete(
                    prompt,
                    grammar=json_schema(schema, REPORT_ORDER),
                    max_tokens=max_tokens,
                    temperature=settings.report_temperature,
                    seed=settings.seed,
                    timeout=settings.report_timeout_s,
                )
            except EngineError as exc:
                raise ReportError(f"consultation {consultation.id!r}: {exc}") from exc
            try:
                content = parse_report(finished.text, codes)
            except ReportFormatError as exc:
                problem = f"{exc} (after {finished.usage.completion_tokens} tokens)"
                log.info("consultation %s: report attempt failed: %s", consultation.id, problem)
                continue
            consultation.record(
                {"role": "report", "at": fhir_datetime(self._clock()), "content": finished.text}
            )
            return content
        raise ReportError(
            f"consultation {consultation.id!r}: the model's report is unusable: {problem}"
        )

    async def _formulary(self, cid: str, content: ReportContent) -> list[PassageText]:
        """Passages retrieved for each proposed medication, to check it against (guards)."""
        retriever = self._deps.retriever
        if retriever is None or not content.medications:
            return []
        found: list[PassageText] = []
        for proposal in content.medications:
            query = f"{proposal.text} {proposal.dose or ''}".strip()
            try:
                passages = await retriever.search(query, self.settings.formulary_k)
            except RagError as exc:
                log.info("consultation %s: formulary search failed: %s", cid, exc)
                continue
            found += [PassageText(p.citation, p.text) for p in passages]
        return found

    def _sensor_devices(self, observations: Iterable[UsedObservation]) -> list[MappedResource]:
        if self._devices is None:
            return []
        found: dict[str, MappedResource] = {}
        for used in observations:
            reference = used.mapped.resource.get("device", {}).get("reference")
            if isinstance(reference, str) and reference not in found:
                device = self._devices(reference)
                if device is not None:
                    found[reference] = device
        return list(found.values())

    async def model_identity(self) -> ModelIdentity:
        """The loaded model's name and file sha256 (hashed once when the manifest has none), or
        the remote server's model name and URL."""
        if self._model is None:
            info = self.engine.model_info
            if info.file is None:  # served by a remote server
                self._model = ModelIdentity(info.name, None, None, info.endpoint)
                return self._model
            sha256 = info.sha256
            if sha256 is None:  # a model_path outside the manifest
                sha256 = await asyncio.to_thread(file_sha256, info.file)
            self._model = ModelIdentity(info.name, sha256, info.file.name)
        return self._model

    async def _save(self, consultation: Consultation) -> bool:
        """Archive the consultation's record; whether it is on disk."""
        if self._archive is None:
            return False
        try:
            await self._archive.save(consultation.snapshot())
        except OSError as exc:
            log.warning("consultation %s: cannot archive it: %s", consultation.id, exc)
            return False
        return True


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
