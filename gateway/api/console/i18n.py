"""The console's message catalogue (Swedish and English) and the choice of language.

Every string a page shows comes from here, so a page is never half in one language. The
language is the ``lang`` query parameter (remembered in a cookie), else that cookie, else the
browser's Accept-Language, else Swedish: the devices centre works in Swedish.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("sv", "en")
DEFAULT = "sv"
COOKIE = "aidlink_console_lang"

_SV: dict[str, str] = {
    "app": "aidlink konsol", "skip": "Hoppa till innehållet", "nav": "Huvudmeny",
    "nav.fleet": "Enheter", "nav.onboard": "Registrera enhet", "nav.bulk": "Massregistrering",
    "nav.licences": "Licenser", "logout": "Logga ut", "language": "Språk",
    "signed_in": "Inloggad som {client} ({role}) för huvudman {principal}",
    "login.title": "Logga in", "login.client_id": "Klient-id", "login.secret": "Klienthemlighet",
    "login.submit": "Logga in",
    "login.help": "Logga in med en OAuth-klient med rollen tekniker eller administratör"
                  " (skapad med aidlink client add).",
    "login.expired": "Din inloggning har gått ut. Logga in igen.",
    "login.required": "Logga in för att fortsätta.",
    "login.refused": "Inloggningen nekades: {reason}",
    "login.role": "Konsolen är för tekniker och administratörer, inte för rollen {role}.",
    "login.out": "Du är utloggad.", "required": "Obligatoriskt fält.",
    "csrf": "Formuläret saknar eller har en ogiltig säkerhetstoken. Ladda om sidan och försök"
            " igen.",
    "error.title": "Något gick fel", "error.back": "Tillbaka till enheterna",
    "fleet.title": "Enheter", "fleet.filters": "Filter", "fleet.q": "Sök (id, modell,"
    " serienummer)", "fleet.state": "Status", "fleet.connection": "Anslutning",
    "fleet.compliance": "Firmware och policy", "fleet.any": "Alla", "fleet.apply": "Filtrera",
    "fleet.count": "{count} enheter", "fleet.none": "Inga enheter matchar filtret.",
    "fleet.limited": "Visar de första {count}; förfina filtret.",
    "col.device": "Enhet", "col.model": "Modell", "col.serial": "Serienummer",
    "col.state": "Status", "col.online": "Anslutning", "col.battery": "Batteri",
    "col.firmware": "Firmware", "col.compliance": "Policy", "col.last_reading": "Senaste"
    " mätning", "col.last_seen": "Senast sedd", "col.principal": "Huvudman",
    "online": "Ansluten", "offline": "Frånkopplad", "never": "Aldrig sedd",
    "compliant": "Uppfyller policyn", "noncompliant": "Uppfyller inte policyn",
    "state.in_stock": "I lager", "state.assigned": "Utlämnad", "state.returned": "Återlämnad",
    "state.reconditioning": "Rekonditioneras", "state.retired": "Utrangerad",
    "device.title": "Enhet {id}", "device.facts": "Uppgifter", "device.client": "MQTT-klient",
    "device.created": "Registrerad", "device.readings": "Senaste mätningar",
    "device.plot": "Mätvärden de senaste 30 dagarna",
    "device.plot_desc": "Linjediagram med {series} serier; samma värden finns i tabellen"
                        " nedan.",
    "device.no_readings": "Inga mätningar de senaste 30 dagarna.",
    "device.readings_denied": "Mätvärden är patientdata: din klient saknar behörighet ({reason}).",
    "device.readings_logged": "Visningen av patientdata har loggats i åtkomstloggen.",
    "device.history": "Livshistorik", "device.actions": "Åtgärder",
    "col.time": "Tid", "col.measure": "Mätning", "col.value": "Värde", "col.unit": "Enhet",
    "col.action": "Händelse", "col.actor": "Utförd av", "col.detail": "Detaljer",
    "action.assign": "Lämna ut till patient", "action.return": "Ta tillbaka",
    "action.recondition": "Rekonditionera", "action.revoke": "Spärra behörigheter",
    "field.patient": "Patientreferens", "field.basis": "Lagrum",
    "field.unit": "Förskrivande enhet (valfritt)", "field.reason": "Orsak",
    "field.until": "Planerad sista dag (valfritt)",
    "field.fault": "Rapporterat fel (valfritt)", "field.revoke_reason": "Spärrorsak (RFC 5280)",
    "done.assign": "Enheten är utlämnad.", "done.return": "Enheten är återlämnad.",
    "done.recondition": "Rekonditionering startad; enheten behåller sina behörigheter tills"
                        " den har bekräftat raderingen. Raderingskommandot, som väntar tills"
                        " MQTT-brokern har tagit emot det: {topic} {payload}",
    "device.wipe": "Radering",
    "wipe.requested": "Begärd {at}; kommandot väntar på nästa nedlänksrunda, som lämnar det"
                      " till MQTT-brokern",
    "wipe.published": "Kommandot ligger hos MQTT-brokern sedan {at}; väntar på enhetens"
                      " bekräftelse",
    "wipe.confirmed": "Bekräftad: enheten raderades {at}; dess behörigheter är spärrade",
    "done.revoke": "Enhetens behörigheter är spärrade.",
    "onboard.title": "Registrera enhet", "onboard.model": "Modell",
    "onboard.serial": "Serienummer", "onboard.firmware": "Firmwareversion (valfritt)",
    "onboard.alarm": "Larmkonto SIA DC-09 (valfritt)", "onboard.submit": "Registrera",
    "onboard.unit": "Enhet som enheten är till för (valfritt; en pilot kan gälla vissa enheter)",
    "onboard.done": "Enhet {id} är registrerad.",
    "onboard.once": "Behörigheterna visas bara den här gången. Spara dem nu.",
    "onboard.username": "MQTT-användarnamn", "onboard.password": "MQTT-lösenord",
    "onboard.broker": "MQTT-broker", "onboard.topic": "Ämnesprefix",
    "onboard.certificate": "Certifikat (PEM)", "onboard.key": "Privat nyckel (PEM)",
    "onboard.chain": "CA-kedja (PEM)", "onboard.open": "Öppna enhetssidan",
    "bulk.title": "Massregistrering från CSV", "bulk.file": "CSV-fil",
    "bulk.help": "Kolumner: {columns}. En rad per enhet; rader som inte godtas listas med"
                 " radnummer.",
    "bulk.submit": "Ladda upp och registrera", "bulk.empty": "Välj en CSV-fil.",
    "bulk.progress": "Registrerade {done} av {total}", "bulk.running": "Pågår …",
    "bulk.finished": "Klar: {onboarded} registrerade, {refused} nekade av {rows} rader.",
    "bulk.failed": "Avbruten: {reason}", "bulk.refused": "Nekade rader",
    "col.line": "Rad", "bulk.download": "Hämta behörigheterna (JSON, en gång)",
    "bulk.downloaded": "Behörigheterna är hämtade och finns inte längre kvar på servern.",
    "licences.title": "Licenser", "licences.month": "Månad (ÅÅÅÅ-MM)",
    "licences.show": "Visa", "licences.costs": "Månadskostnader {month}",
    "licences.expiring": "Licenser som löper ut inom {days} dagar",
    "licences.all": "Alla licenser", "licences.none": "Inga licenser.",
    "col.licence": "Licens", "col.terms": "Villkor", "col.start": "Startdatum",
    "col.end": "Slutdatum", "col.days_left": "Dagar kvar", "col.unit_name": "Enhet/avdelning",
    "col.licences": "Licenser", "col.subscription": "Abonnemang (kr)",
    "col.device_cost": "Hjälpmedel (kr)", "col.total": "Totalt (kr)",
    "yes": "Ja", "no": "Nej", "none": "\u2013",
}

_EN: dict[str, str] = {
    "app": "aidlink console", "skip": "Skip to content", "nav": "Main menu",
    "nav.fleet": "Devices", "nav.onboard": "Onboard device", "nav.bulk": "Bulk onboarding",
    "nav.licences": "Licences", "logout": "Log out", "language": "Language",
    "signed_in": "Signed in as {client} ({role}) for principal {principal}",
    "login.title": "Log in", "login.client_id": "Client id", "login.secret": "Client secret",
    "login.submit": "Log in",
    "login.help": "Log in with an OAuth client of role technician or admin (made with"
                  " aidlink client add).",
    "login.expired": "Your session has expired. Please log in again.",
    "login.required": "Log in to continue.",
    "login.refused": "Login refused: {reason}",
    "login.role": "The console is for technicians and admins, not for role {role}.",
    "login.out": "You are logged out.", "required": "This field is required.",
    "csrf": "The form's security token is missing or not valid. Reload the page and try"
            " again.",
    "error.title": "Something went wrong", "error.back": "Back to the devices",
    "fleet.title": "Devices", "fleet.filters": "Filters", "fleet.q": "Search (id, model,"
    " serial)", "fleet.state": "State", "fleet.connection": "Connection",
    "fleet.compliance": "Firmware and policy", "fleet.any": "Any", "fleet.apply": "Filter",
    "fleet.count": "{count} devices", "fleet.none": "No devices match the filter.",
    "fleet.limited": "Showing the first {count}; narrow the filter.",
    "col.device": "Device", "col.model": "Model", "col.serial": "Serial",
    "col.state": "State", "col.online": "Connection", "col.battery": "Battery",
    "col.firmware": "Firmware", "col.compliance": "Policy", "col.last_reading": "Last reading",
    "col.last_seen": "Last seen", "col.principal": "Principal",
    "online": "Online", "offline": "Offline", "never": "Never seen",
    "compliant": "Complies", "noncompliant": "Does not comply",
    "state.in_stock": "In stock", "state.assigned": "Assigned", "state.returned": "Returned",
    "state.reconditioning": "Reconditioning", "state.retired": "Retired",
    "device.title": "Device {id}", "device.facts": "Details", "device.client": "MQTT client",
    "device.created": "Onboarded", "device.readings": "Recent readings",
    "device.plot": "Readings of the last 30 days",
    "device.plot_desc": "Line chart of {series} series; the same values are in the table"
                        " below.",
    "device.no_readings": "No readings in the last 30 days.",
    "device.readings_denied": "Readings are patient data: your client may not read them"
                              " ({reason}).",
    "device.readings_logged": "This view of patient data was written to the access log.",
    "device.history": "Lifecycle history", "device.actions": "Actions",
    "col.time": "Time", "col.measure": "Measurement", "col.value": "Value", "col.unit": "Unit",
    "col.action": "Event", "col.actor": "By", "col.detail": "Details",
    "action.assign": "Assign to patient", "action.return": "Take back",
    "action.recondition": "Recondition", "action.revoke": "Revoke credentials",
    "field.patient": "Patient reference", "field.basis": "Legal basis",
    "field.unit": "Prescribing unit (optional)", "field.reason": "Reason",
    "field.until": "Planned last day (optional)",
    "field.fault": "Reported fault (optional)", "field.revoke_reason": "Revocation reason"
    " (RFC 5280)",
    "done.assign": "The device is assigned.", "done.return": "The device is taken back.",
    "done.recondition": "Reconditioning started; the device keeps its credentials until it"
                        " confirms the wipe. The wipe command, pending until the MQTT broker"
                        " has accepted it: {topic} {payload}",
    "device.wipe": "Wipe",
    "wipe.requested": "Requested {at}; the command waits for the next downlink round to hand"
                      " it to the MQTT broker",
    "wipe.published": "The command has been held by the MQTT broker since {at}; waiting for the"
                      " device's confirmation",
    "wipe.confirmed": "Confirmed: the device was wiped {at}; its credentials are revoked",
    "done.revoke": "The device's credentials are revoked.",
    "onboard.title": "Onboard device", "onboard.model": "Model", "onboard.serial": "Serial",
    "onboard.firmware": "Firmware version (optional)",
    "onboard.alarm": "SIA DC-09 alarm account (optional)", "onboard.submit": "Onboard",
    "onboard.unit": "Unit it is for (optional; a pilot may be limited to units)",
    "onboard.done": "Device {id} is onboarded.",
    "onboard.once": "The credentials are shown this once only. Save them now.",
    "onboard.username": "MQTT username", "onboard.password": "MQTT password",
    "onboard.broker": "MQTT broker", "onboard.topic": "Topic prefix",
    "onboard.certificate": "Certificate (PEM)", "onboard.key": "Private key (PEM)",
    "onboard.chain": "CA chain (PEM)", "onboard.open": "Open the device page",
    "bulk.title": "Bulk onboarding from CSV", "bulk.file": "CSV file",
    "bulk.help": "Columns: {columns}. One row per device; refused rows are listed by line.",
    "bulk.submit": "Upload and onboard", "bulk.empty": "Choose a CSV file.",
    "bulk.progress": "Onboarded {done} of {total}", "bulk.running": "Running …",
    "bulk.finished": "Done: {onboarded} onboarded, {refused} refused of {rows} rows.",
    "bulk.failed": "Stopped: {reason}", "bulk.refused": "Refused rows",
    "col.line": "Line", "bulk.download": "Download the credentials (JSON, once)",
    "bulk.downloaded": "The credentials were downloaded and are no longer kept on the server.",
    "licences.title": "Licences", "licences.month": "Month (YYYY-MM)",
    "licences.show": "Show", "licences.costs": "Monthly costs {month}",
    "licences.expiring": "Licences ending within {days} days",
    "licences.all": "All licences", "licences.none": "No licences.",
    "col.licence": "Licence", "col.terms": "Terms", "col.start": "Start date",
    "col.end": "End date", "col.days_left": "Days left", "col.unit_name": "Unit",
    "col.licences": "Licences", "col.subscription": "Subscription (SEK)",
    "col.device_cost": "Device (SEK)", "col.total": "Total (SEK)",
    "yes": "Yes", "no": "No", "none": "\u2013",
}

CATALOGUE: dict[str, dict[str, str]] = {"sv": _SV, "en": _EN}

# Measurement names by catalogue key where the Swedish differs from the catalogue's English.
METRIC_NAMES_SV = {
    "bp_systolic": "Systoliskt blodtryck", "bp_diastolic": "Diastoliskt blodtryck",
    "bp_mean": "Medelartärtryck", "pulse_rate_cuff": "Puls", "pulse_rate_oximeter": "Puls",
    "body_weight": "Kroppsvikt", "body_height": "Längd", "bmi": "BMI",
    "spo2": "Syremättnad", "body_temperature": "Kroppstemperatur",
    "pef": "Maximalt utandningsflöde", "body_fat": "Kroppsfett",
}


class Translator:
    """The messages of one language, formatted with named values."""

    def __init__(self, lang: str) -> None:
        if lang not in CATALOGUE:
            raise ValueError(f"language {lang!r} is not one of {', '.join(LANGUAGES)}")
        self.lang = lang
        self._messages = CATALOGUE[lang]

    def __call__(self, key: str, **values: object) -> str:
        """The message ``key``; a key missing from the catalogue is a programming error."""
        return self._messages[key].format(**values) if values else self._messages[key]


def from_accept_language(header: str | None) -> str | None:
    """The first supported language of an Accept-Language header, by quality."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        # Norwegian and Danish readers get Swedish before English, as people here would.
        primary = {"nb": "sv", "nn": "sv", "no": "sv", "da": "sv"}.get(primary, primary)
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else None


def choose(query: str | None, cookies: Mapping[str, str], accept: str | None) -> str:
    """The page's language: query, then cookie, then Accept-Language, then Swedish."""
    for candidate in (query, cookies.get(COOKIE), from_accept_language(accept)):
        if candidate in LANGUAGES:
            return str(candidate)
    return DEFAULT
