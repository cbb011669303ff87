"""Bulk onboarding from an uploaded CSV, with a progress page.

The upload starts a job on a thread of its own, running ``provisioning.bulk.onboard_csv``
(the service behind ``POST /v1/devices/bulk`` and ``aidlink device bulk``) with its progress
callback; the job page refreshes itself until the job is done (no script needed). Rows
naming another principal are refused as the API refuses a technician's. Each bundle carries
the broker address the API's bulk route gives (``device_broker``). The onboarded devices'
credentials stay in memory until downloaded once, or for JOB_TTL at most.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Request, Response, UploadFile
from fastapi.responses import HTMLResponse
from psycopg_pool import ConnectionPool

from adapters.model import dumps
from gateway.api.broker_sync import BrokerDir, sync
from gateway.api.console import i18n
from gateway.api.console.render import ConsoleRoute, language, page, redirect
from gateway.api.console.session import PATH, ConsoleCaller, CsrfCaller
from gateway.api.deps import State
from gateway.api.provisioning_common import MaybePassphrase, Operator, need_ca, operator
from gateway.api.provisioning_licences import CSV_LIMIT, DeviceBroker, _confine
from gateway.auth import Caller
from provisioning import bulk
from provisioning.errors import ProvisioningError
from provisioning.pki import PassphraseError

router = APIRouter(route_class=ConsoleRoute)

JOB_TTL = 3600.0  # seconds a finished job (and any undownloaded credentials) is kept
REFRESH_SECONDS = 2


@dataclass
class Job:
    """One upload's onboarding: who started it, how far it got, and what came of it."""

    id: str
    principal: str
    subject: str
    done: int = 0
    total: int = 0
    finished: bool = False
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    refused: list[dict[str, Any]] = field(default_factory=list)
    credentials: list[dict[str, Any]] = field(default_factory=list)
    downloaded: bool = False
    started: float = field(default_factory=time.monotonic)

    def owned_by(self, who: Caller) -> bool:
        """Only the client that started a job sees it."""
        return self.principal == who.principal and self.subject == who.subject


class Jobs:
    """The application's bulk jobs, by id, forgotten JOB_TTL after they started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def add(self, who: Caller) -> Job:
        """A new job for ``who``."""
        job = Job(id=secrets.token_urlsafe(16), principal=who.principal, subject=who.subject)
        with self._lock:
            now = time.monotonic()
            self._jobs = {k: j for k, j in self._jobs.items() if now - j.started < JOB_TTL}
            self._jobs[job.id] = job
        return job

    def get(self, job_id: str, who: Caller) -> Job:
        """The caller's job; another's is as unknown as a missing one (404)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or not job.owned_by(who) or time.monotonic() - job.started >= JOB_TTL:
            raise HTTPException(404, f"bulk job {job_id} not found")
        return job


def jobs(request: Request) -> Jobs:
    """The application's job table, made on first use."""
    found = getattr(request.app.state, "aidlink_console_jobs", None)
    if not isinstance(found, Jobs):
        found = Jobs()
        request.app.state.aidlink_console_jobs = found
    return found


def _run(job: Job, pool: ConnectionPool[Any], passphrase: bytes, text: str,
         op: Operator, broker: Path | None, broker_url: str | None) -> None:
    """The job's thread: onboard the rows, recording progress and the outcome."""
    def progress(done: int, total: int) -> None:
        job.done, job.total = done, total

    try:
        # Confined to the token's principal, an admin's too, as the console always is.
        text, refused = _confine(text, job.principal)
        with pool.connection() as conn:
            result = bulk.onboard_csv(conn, passphrase, text, actor=op.actor,
                                      progress=progress, broker_url=broker_url)
            if any("mqtt_password" in row for row in result.onboarded):
                # Password devices connect only once the broker's password file holds them.
                sync(conn, passphrase, broker, {})
        result.refused = sorted(result.refused + refused, key=lambda r: int(r["line"]))
        result.total += len(refused)
        job.counts, job.refused = result.counts(), result.refused
        job.credentials = result.onboarded
        job.done = job.total = result.total
    except (ProvisioningError, PassphraseError) as exc:
        job.error = str(exc)
    except Exception as exc:  # a job must end visibly, whatever stopped it
        job.error = f"{type(exc).__name__}: {exc}"
    finally:
        job.finished = True


@router.get("/bulk", response_class=HTMLResponse)
def bulk_form(request: Request, who: ConsoleCaller) -> HTMLResponse:
    """The upload form."""
    operator(who)
    return page(request, "bulk.html", who=who, columns=", ".join(bulk.COLUMNS))


@router.post("/bulk", response_class=HTMLResponse)
async def upload(request: Request, who: CsrfCaller, state: State, ca: MaybePassphrase,
                 broker: BrokerDir, broker_url: DeviceBroker,
                 file: Annotated[UploadFile | None, File()] = None) -> Response:
    """Start onboarding an uploaded CSV; to the job's progress page."""
    op = operator(who)
    passphrase = need_ca(ca)
    t = i18n.Translator(language(request))
    data = b"" if file is None else await file.read(CSV_LIMIT + 1)
    problem, text = "", ""
    if not data:
        problem = t("bulk.empty")
    elif len(data) > CSV_LIMIT:
        problem = f"the CSV file exceeds the limit of {CSV_LIMIT} bytes"
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            problem = f"the CSV file is not UTF-8: byte {exc.start}"
    if problem:
        return page(request, "bulk.html", who=who, status=422, columns=", ".join(bulk.COLUMNS),
                    errors={"file": problem})
    job = jobs(request).add(who)
    threading.Thread(target=_run,
                     args=(job, state.pool, passphrase, text, op, broker, broker_url),
                     name=f"console-bulk-{job.id[:6]}", daemon=True).start()
    return redirect(f"{PATH}/bulk/{job.id}")


@router.get("/bulk/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, who: ConsoleCaller) -> HTMLResponse:
    """A job's progress; the page reloads itself while the job runs."""
    operator(who)
    job = jobs(request).get(job_id, who)
    return page(request, "bulk_job.html", who=who, job=job,
                refresh=None if job.finished else REFRESH_SECONDS)


@router.post("/bulk/{job_id}/credentials")
def credentials(request: Request, job_id: str, who: CsrfCaller) -> Response:
    """The onboarded devices' credentials as JSON, once; the server forgets them after."""
    operator(who)
    job = jobs(request).get(job_id, who)
    if not job.finished or job.downloaded:
        return page(request, "bulk_job.html", who=who, status=409, job=job,
                    refresh=None if job.finished else REFRESH_SECONDS)
    body, job.credentials, job.downloaded = dumps(job.credentials), [], True
    return Response(body, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="aidlink-bulk-{job.id[:8]}.json"',
        "Cache-Control": "no-store"})
