"""The isolation table: one or more attempts by principal 2080 on principal 20's ids for every
route, and the routes that serve no principal's data (tests/test_isolation.py runs them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import Role

CA_PASSPHRASE = b"isolation-test-ca-passphrase"
# Principal 20's data that a principal-2080 caller never sees (unless it sent it itself).
EVENT_NOTE = "only-principal-20-sees-this"
END_USER = "nurse-of-region-20"

C, T, A = Role.CLINICIAN, Role.TECHNICIAN, Role.AUDITOR
Check = Callable[[Any], bool]


def items_empty(body: Any) -> bool:
    return isinstance(body, dict) and body.get("items") == []


def bundle_empty(body: Any) -> bool:
    return (isinstance(body, dict) and body.get("resourceType") == "Bundle"
            and not body.get("entry") and body.get("total", 0) == 0)


def own_principal_only(body: Any) -> bool:
    return [item["code"] for item in body["items"]] == ["2080"]


def nothing_onboarded(body: Any) -> bool:
    return body["onboarded"] == [] and len(body["refused"]) == 1


@dataclass(frozen=True)
class Case:
    """One attempt by principal 2080 (as ``role``) on principal 20's ids. ``path``, params,
    body and CSV are templates over ``World.ids``; ``empty`` judges a 200 answer. A
    ``console`` case signs in as the console does (the token in its cookie, the session's
    CSRF token in the form) and sends ``form`` fields, the CSV as an uploaded file."""

    role: Role
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    csv: str | None = None
    expect: tuple[int, ...] = (404,)
    empty: Check | None = None
    console: bool = False
    form: dict[str, str] | None = None


SEARCH = (200, 404)  # a search may answer "not found" or an empty result
REASON = {"reason": "isolation test"}
CASES: dict[tuple[str, str], list[Case]] = {
    # --- patient data and events (clinicians' systems) ---
    ("GET", "/v1/observations"): [
        Case(C, "/v1/observations", {"patient": "{patient}"}, expect=SEARCH, empty=items_empty),
        Case(C, "/v1/observations", {"device": "{cuff}"}, expect=SEARCH, empty=items_empty),
    ],
    ("GET", "/fhir/r4/Observation"): [
        Case(C, "/fhir/r4/Observation", {"subject": "Patient/{patient}"}, expect=SEARCH,
             empty=bundle_empty),
    ],
    ("GET", "/fhir/r4/Device/{device_id}"): [
        Case(C, "/fhir/r4/Device/{cuff}"),
        Case(T, "/fhir/r4/Device/{hub}"),
    ],
    ("GET", "/fhir/r4/Patient/{ref}"): [Case(C, "/fhir/r4/Patient/{patient}")],
    ("GET", "/v1/events"): [
        Case(C, "/v1/events", {"patient": "{patient}"}, expect=SEARCH, empty=items_empty),
        Case(C, "/v1/events", {"device": "{cuff}"}, expect=SEARCH, empty=items_empty),
        # Paging on from one of 20's event ids shows 2080's events only (the body check).
        Case(C, "/v1/events", {"after_id": "{first_event}"}, expect=(200,)),
    ],
    # Served over real HTTP (a stream never ends): see test_the_event_stream_is_isolated.
    ("GET", "/v1/events/stream"): [],
    ("GET", "/v1/access-log"): [
        # 2080's own searches for the same reference (earlier cases) are 2080's entries, under
        # 2080's pseudonym; 20's entries would carry 20's end user (the body check).
        Case(A, "/v1/access-log", {"patient": "{patient}"}, expect=(200,)),
        Case(A, "/v1/access-log", {"client": "test-clinician"}, expect=(200,)),
    ],
    # --- devices (technicians) ---
    ("POST", "/v1/devices"): [
        Case(T, "/v1/devices", json={"principal": "20", "model": "bpm", "serial": "ISO-1"},
             expect=(403,)),
    ],
    ("GET", "/v1/devices/{device_id}"): [Case(T, "/v1/devices/{cuff}")],
    ("GET", "/v1/devices/{device_id}/history"): [
        Case(T, "/v1/devices/{cuff}/history"),
        Case(T, "/v1/devices/{cuff}/history", {"by_owner": "true"}),
    ],
    ("POST", "/v1/devices/{device_id}/pair"): [
        Case(T, "/v1/devices/{cuff}/pair", json={"hub": "{own_hub}"}),
        Case(T, "/v1/devices/{own_cuff}/pair", json={"hub": "{hub}"}),
    ],
    ("POST", "/v1/devices/{device_id}/assign"): [
        Case(T, "/v1/devices/{unpaired}/assign", json={"patient": "p-1", "basis": "HSL"}),
    ],
    # Transfers span two principals, so only admins (who act for every principal) may.
    ("POST", "/v1/devices/{device_id}/transfer"): [
        Case(T, "/v1/devices/{unpaired}/transfer",
             json={"to_principal": "2080", "reason": "isolation test"}, expect=(403,)),
    ],
    ("POST", "/v1/devices/bulk"): [
        Case(T, "/v1/devices/bulk", csv="principal,model,serial\n20,bpm,ISO-2\n",
             expect=(200,), empty=nothing_onboarded),
    ],
    ("GET", "/v1/devices.csv"): [
        Case(T, "/v1/devices.csv", {"principal": "20"}, expect=(403,)),
        Case(T, "/v1/devices.csv", expect=(200,)),
    ],
    ("POST", "/v1/devices/traceability.csv"): [
        Case(T, "/v1/devices/traceability.csv",
             csv="device_id,article_number,individual_number\n{cuff},ISO-ART,77\n"),
    ],
    # --- principals, policies, the catalogue, licences and reports ---
    ("GET", "/v1/principals"): [Case(T, "/v1/principals", expect=(200,),
                                     empty=own_principal_only)],
    ("GET", "/v1/policy"): [Case(T, "/v1/policy", {"principal": "20"}, expect=(403,))],
    ("PUT", "/v1/policy"): [
        Case(T, "/v1/policy", {"principal": "20"}, json={}, expect=(403,))],
    ("GET", "/v1/policy/check"): [
        Case(T, "/v1/policy/check", {"principal": "20"}, expect=(403,)),
        Case(T, "/v1/policy/check", expect=(200,)),
    ],
    ("GET", "/v1/licences"): [
        Case(T, "/v1/licences", {"device": "{cuff}"}),
        Case(T, "/v1/licences", {"principal": "20"}, expect=(403,)),
    ],
    ("POST", "/v1/licences"): [
        Case(T, "/v1/licences", json={"device_id": "{cuff}", "terms": "ISO-TERMS",
                                      "start_date": "2026-11-01"}),
    ],
    ("POST", "/v1/licences/{licence_id}/end"): [
        Case(T, "/v1/licences/{licence}/end",
             json={"end_date": "2026-12-31", "reason": "isolation test"}),
    ],
}

# Orders and swaps: 20's rows are refused by line, 20's devices are not found, and the
# lead-time report of 2080 holds 2080's months only (20 has an order in the world).
CASES.update({
    ("POST", "/v1/orders/import"): [
        Case(T, "/v1/orders/import", csv="order_id,principal,patient,model,ordered_at\n"
             "ISO-O2,20,{patient},bpm,2026-11-02 09:00\n", expect=(200,),
             empty=lambda body: body["imported"] == [] and len(body["refused"]) == 1)],
    ("GET", "/v1/orders"): [
        Case(T, "/v1/orders", {"principal": "20"}, expect=(403,)),
        Case(T, "/v1/orders", expect=(200,), empty=items_empty)],
    ("GET", "/v1/reports/lead-times"): [
        Case(T, "/v1/reports/lead-times", {"principal": "20"}, expect=(403,)),
        Case(T, "/v1/reports/lead-times", expect=(200,),
             empty=lambda body: all(r["principal"] == "2080" for r in body["items"]))],
    ("POST", "/v1/devices/{device_id}/swap"): [
        Case(T, "/v1/devices/{cuff}/swap", json={"new_device": "{own_hub}", "fault": "x"}),
        Case(T, "/v1/devices/{own_cuff}/swap", json={"new_device": "{unpaired}",
                                                     "fault": "x"})],
})
# Each report: naming principal 20 is refused; the caller's own report shows none of 20's.
REPORTS = {"costs": {"month": "2026-11"}, "expiring": {"days": "400"}, "unlicensed": {},
           "idle": {"days": "1"}, "deliveries": {"since": "2026-01-01", "until": "2027-01-01"},
           "overdue": {}}
CASES.update({("GET", f"/v1/reports/{name}"): [
    Case(T, f"/v1/reports/{name}", {"principal": "20", **params}, expect=(403,)),
    Case(T, f"/v1/reports/{name}", params, expect=(200,)),
] for name, params in REPORTS.items()})
# Model stages are the devices centre's: only admins change them, and principals join only
# through an admin. The participation and pilot reports show a technician its own principal.
CASES.update({
    ("GET", "/v1/models"): [Case(T, "/v1/models", expect=(200,))],
    ("GET", "/v1/models/{model}"): [Case(T, "/v1/models/bpm", expect=(200,))],
    ("PUT", "/v1/models/{model}/pilot"): [
        Case(T, "/v1/models/bpm/pilot", json={"principals": ["2080"]}, expect=(403,))],
    ("POST", "/v1/models/{model}/promote"): [
        Case(T, "/v1/models/bpm/promote", json={"reason": "isolation test"}, expect=(403,))],
    ("POST", "/v1/principals/{code}/join"): [
        Case(T, "/v1/principals/20/join", json={}, expect=(403,))],
    ("GET", "/v1/reports/participation"): [
        Case(T, "/v1/reports/participation", {"principal": "20"}, expect=(403,)),
        Case(T, "/v1/reports/participation", expect=(200,),
             empty=lambda body: [i["principal"] for i in body["items"]] == ["2080"])],
    ("GET", "/v1/reports/pilot"): [
        Case(T, "/v1/reports/pilot", {"principal": "20", "model": "bpm"}, expect=(403,)),
        Case(T, "/v1/reports/pilot", {"model": "bpm"}, expect=(200,),
             empty=lambda body: {i["principal"] for i in body["items"]} == {"2080"})],
})
# Principals and the catalogue are shared: only admins write them.
CASES.update({("POST", path): [Case(T, path, json=body, expect=(403,))] for path, body in (
    ("/v1/principals", {"code": "2099", "name": "X"}),
    ("/v1/vendors", {"code": "V9", "name": "X"}),
    ("/v1/products", {"article_number": "A9", "name": "X", "product_class": "bpm",
                      "vendor": "V9"}),
    ("/v1/licence-terms", {"code": "L9", "article_number": "A9", "period": "monthly",
                           "price": "1", "device_included": True, "acquisition": "rent"}))})
# Device transitions: 404 for another principal's device before anything happens.
CASES.update({("POST", f"/v1/devices/{{device_id}}/{action}"): [
    Case(T, f"/v1/devices/{{cuff}}/{action}", json=body)
] for action, body in (("return", REASON), ("recondition", REASON), ("retire", REASON),
                       ("recondition/finish", None), ("reissue", None),
                       ("revoke", {"reason": "key_compromise"}),
                       ("recondition/confirm", {"nonce": "n-1",
                                                "confirmed_at": "2026-11-01T08:00:00Z"}))})

# Renewal, policy history and API clients (the routes of `device renew`, `policy show
# --history` and `client …`): renewal and history are of the caller's principal; clients are
# an admin's, of its own principal only. The world holds no API client of principal 20, so an
# id made up for it stands in here; tests/test_parity.py disables a real one of another
# principal and gets 404.
CASES.update({
    ("POST", "/v1/devices/{device_id}/renew"): [
        Case(T, "/v1/devices/{cuff}/renew"),
        Case(T, "/v1/devices/{hub}/renew", json={"new_key": True})],
    ("POST", "/v1/devices/renew-due"): [
        Case(T, "/v1/devices/renew-due", {"principal": "20"}, expect=(403,)),
        Case(T, "/v1/devices/renew-due", expect=(200,),
             empty=lambda body: body["principal"] == "2080")],
    ("GET", "/v1/policy/history"): [
        Case(T, "/v1/policy/history", {"principal": "20"}, expect=(403,)),
        Case(T, "/v1/policy/history", expect=(200,),
             empty=lambda body: body["principal"] == "2080"
             and all(item["principal"] == "2080" for item in body["items"]))],
    ("GET", "/v1/clients"): [
        Case(T, "/v1/clients", expect=(403,)),
        Case(Role.ADMIN, "/v1/clients", expect=(200,),
             empty=lambda body: all(c["principal"] == "2080" for c in body["items"]))],
    ("POST", "/v1/clients"): [
        Case(Role.ADMIN, "/v1/clients", json={"role": "clinician", "name": "ISO EHR",
                                       "principal": "20"}, expect=(422,)),
        Case(Role.ADMIN, "/v1/clients", json={"role": "clinician", "name": "ISO EHR"},
             expect=(201,))],
    ("POST", "/v1/clients/{client_id}/disable"): [
        Case(Role.ADMIN, "/v1/clients/ac-of-principal-20/disable")],
})
# A principal's CRL (the route of `principal crl`): a technician of another principal finds
# none, in either encoding; admins act for every principal, so they may read it.
CASES.update({
    ("GET", "/v1/principals/{code}/crl"): [
        Case(T, "/v1/principals/20/crl"),
        Case(T, "/v1/principals/20/crl", {"format": "pem"})],
})

# The console: the same walls as the API, for technicians and for admins (the console confines
# an admin to its token's principal too). Pages of the caller's own principal show none of
# principal 20's data; bulk jobs live in memory, so an unknown job id stands for 20's.
ADM = Role.ADMIN
CASES.update({
    ("GET", "/console/"): [
        Case(T, "/console/", console=True, expect=(200,)),
        Case(T, "/console/", {"q": "{cuff}"}, console=True, expect=(200,)),
        Case(ADM, "/console/", console=True, expect=(200,))],
    ("GET", "/console/devices/{device_id}"): [
        Case(T, "/console/devices/{cuff}", console=True),
        Case(ADM, "/console/devices/{cuff}", console=True)],
    ("GET", "/console/onboard"): [Case(T, "/console/onboard", console=True, expect=(200,))],
    ("POST", "/console/onboard"): [
        Case(T, "/console/onboard", console=True, form={"model": "bpm", "serial": "ISO-C1"},
             expect=(200,))],
    ("GET", "/console/bulk"): [Case(T, "/console/bulk", console=True, expect=(200,))],
    # Accepted as a job; its row for principal 20 is refused (tests/test_console_actions.py).
    ("POST", "/console/bulk"): [
        Case(T, "/console/bulk", console=True, csv="principal,model,serial\n20,bpm,ISO-C2\n",
             expect=(303,))],
    ("GET", "/console/bulk/{job_id}"): [Case(T, "/console/bulk/job-of-20", console=True)],
    ("POST", "/console/bulk/{job_id}/credentials"): [
        Case(T, "/console/bulk/job-of-20/credentials", console=True)],
    ("GET", "/console/licences"): [
        Case(T, "/console/licences", {"month": "2026-11"}, console=True, expect=(200,)),
        Case(ADM, "/console/licences", console=True, expect=(200,))],
})
CASES.update({("POST", f"/console/devices/{{device_id}}/{action}"): [
    Case(who, f"/console/devices/{{cuff}}/{action}", console=True, form=form)
    for who in (T, ADM)
] for action, form in (("assign", {"patient": "p-1", "basis": "HSL"}), ("return", REASON),
                       ("recondition", REASON), ("revoke", {"reason": "key_compromise"}))})

# Routes that take no patient, device, event or licence id and serve no principal's data.
# The GET ones are still requested, to show that none of principal 20's data is in them.
NO_PRINCIPAL_DATA: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "whether the API, its database and the gateway work",
    ("GET", "/metrics"): "Prometheus counters of the whole service",
    ("GET", "/fhir/r4/metadata"): "the server's CapabilityStatement",
    ("GET", "/.well-known/jwks.json"): "the public keys that verify tokens",
    ("POST", "/oauth/token"): "a token for the client's own credentials, bound to its principal",
    **dict.fromkeys([("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"),
                     ("GET", "/docs/oauth2-redirect")], "the API description"),
    ("GET", "/console/login"): "the console's login form",
    ("POST", "/console/login"): "a console session for the client's own credentials",
    ("POST", "/console/logout"): "ends the caller's own console session",
    ("GET", "/console/static/console.css"): "the console's stylesheet",
}
