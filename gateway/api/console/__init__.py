"""The technician console: server-rendered pages under ``/console`` on the API service.

Pages authenticate with the same tokens as the API (kept in a cookie), reach the data
through the same dependencies, service layer and row-level security, and leave the OpenAPI
document alone: they serve HTML, not the API's contract. See docs/CONSOLE.md.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Response

from gateway.api.console import bulk, devices, fleet, licences, login, onboard

router = APIRouter(prefix="/console", include_in_schema=False)
for part in (login, fleet, devices, onboard, bulk, licences):
    router.include_router(part.router)


@router.get("/static/console.css")
def stylesheet() -> Response:
    """The console's only stylesheet (served from the package, so a wheel install works)."""
    text = resources.files(__package__).joinpath("static", "console.css").read_text("utf-8")
    # Cached briefly: it changes only with a release.
    return Response(text, media_type="text/css; charset=utf-8",
                    headers={"Cache-Control": "public, max-age=3600",
                             "X-Content-Type-Options": "nosniff"})
