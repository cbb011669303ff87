"""Settings from the environment (``AIDLINK_*``), built by a factory and passed down."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

RUNTIME_FILE = "runtime.json"
SECRET_FILE = "secret.key"  # noqa: S105 - a file name, not a secret


class Settings(BaseSettings):
    """Everything aidlink reads from its environment; flags override these."""

    model_config = SettingsConfigDict(env_prefix="AIDLINK_", extra="ignore")

    database_url: str | None = None
    mqtt_url: str | None = None
    # The broker address devices are given in their provisioning bundles (for example
    # mqtts://mqtt.example.se:8883). AIDLINK_MQTT_URL is the gateway's own connection, often a
    # plaintext loopback listener with the gateway's password: not what a device should use.
    device_broker_url: str | None = None
    home: Path = Path(".aidlink")
    secret: SecretStr | None = None
    # Encrypts the CA private keys at rest; without it one is derived from the server secret.
    ca_passphrase: SecretStr | None = None
    # The gateway's MQTT password on a broker configured by `aidlink broker-config`.
    mqtt_gateway_password: SecretStr | None = None
    # The directory `aidlink broker-config --out` wrote: revocations, reissues and
    # retirements refresh its CRLs, passwords and ACL and reload the broker running on it.
    broker_dir: Path | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    # 1884, not 1883: a system Mosquitto (Debian starts one on install) keeps 1883.
    mqtt_port: int = Field(default=1884, ge=0, le=65535)
    # SIA DC-09 receiver for alarm units (TCP); 0 turns it off.
    dc09_port: int = Field(default=10009, ge=0, le=65535)
    gateway_client_id: str = "aidlink-gateway"
    mqtt_protocol: int = Field(default=5, description="5 for MQTT 5, 4 for MQTT 3.1.1")
    batch_max_rows: int = Field(default=500, ge=1)
    # 25 ms: at 5,000 readings/s a batch closes on time rather than size; a lane then commits
    # some 40 times a second, and a reading waits at most this long to start being written.
    batch_max_delay_ms: int = Field(default=25, ge=1, le=100)
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    # Gateway writer lanes (threads, each with a database connection); see ingest/pipeline.py.
    writers: int = Field(default=2, ge=1, le=16)
    token_ttl_seconds: int = Field(default=12 * 3600, ge=60, le=24 * 3600)
    # How often `aidlink up` renews the certificates due and sends them to devices; 0: never.
    renew_interval_s: int = Field(default=3600, ge=0)
    # How often that same downlink also publishes pending wipe commands, removes confirmed
    # ones and, after a confirmation, refreshes the broker directory (AIDLINK_BROKER_DIR):
    # a wipe or a shut-out should not wait for the next renewal. 0: no rounds of their own
    # (wipes then go out with the renewal rounds only).
    downlink_interval_s: int = Field(default=30, ge=0)
    # How often `aidlink up` and `aidlink housekeeping` re-sign the CRLs in AIDLINK_BROKER_DIR
    # and reload the broker; 0: never. At most half the CRLs' lifetime (checked where used),
    # so that one failed refresh still leaves another before they lapse.
    credentials_interval_s: int = Field(default=6 * 3600, ge=0)
    # How often `aidlink up` applies retention and refreshes the daily aggregates; 0: never.
    housekeeping_interval_s: int = Field(default=24 * 3600, ge=0)
    # "json" for one JSON object per log line (log shippers), "text" for people.
    log_format: Literal["text", "json"] = "text"


class ConfigurationError(Exception):
    """A setting is missing or wrong; the message names it."""


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, then apply explicit overrides (flags)."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**given)  # type: ignore[arg-type]


def runtime_info(settings: Settings) -> dict[str, str]:
    """What a running ``aidlink up`` under this home published about itself, if anything."""
    path = settings.home / RUNTIME_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    pid = int(info.get("pid", 0))
    if pid <= 0 or not _alive(pid):
        return {}
    return {str(k): str(v) for k, v in info.items()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def database_url(settings: Settings) -> str:
    """The database to use: the setting, else the one a running ``aidlink up`` serves."""
    url = settings.database_url or runtime_info(settings).get("database_url")
    if not url:
        raise ConfigurationError(
            "no database: set AIDLINK_DATABASE_URL, or start `aidlink up` "
            f"with --home {settings.home}"
        )
    return url


def mqtt_url(settings: Settings) -> str:
    """The broker to use: the setting, else the one a running ``aidlink up`` serves."""
    url = settings.mqtt_url or runtime_info(settings).get("mqtt_url")
    if not url:
        raise ConfigurationError(
            f"no broker: set AIDLINK_MQTT_URL, or start `aidlink up` with --home {settings.home}"
        )
    return url


# Schemes a device may be told to connect with: MQTT over TCP or TLS, or over WebSockets.
DEVICE_BROKER_SCHEMES = ("mqtt", "mqtts", "ssl", "tls", "ws", "wss")


def without_userinfo(url: str) -> str:
    """The URL without ``user:password@``: a broker address handed to devices must never
    carry anyone's credentials (each device has its own certificate or password)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"broker URL {redacted_url(url)} has a bad port") from exc
    netloc = host if port is None else f"{host}:{port}"
    # The query goes too: a broker address needs none, and it is where a token would hide.
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redacted_url(url: str) -> str:
    """A URL fit for an error message: everything up to the last ``@`` of its authority is
    dropped, so a password never reaches a log even when the URL cannot be parsed."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not a URL)"
    authority, slash, tail = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{tail}"


def device_broker_url(settings: Settings) -> str | None:
    """The broker address for provisioning bundles, without credentials; None if none known.

    AIDLINK_DEVICE_BROKER_URL when set. Otherwise the host and port of the gateway's own
    broker (AIDLINK_MQTT_URL, or the one a running ``aidlink up`` serves) with its user and
    password removed: right on one machine, where devices use the gateway's listener, and a
    reason to set AIDLINK_DEVICE_BROKER_URL everywhere else.
    """
    if settings.device_broker_url:
        url = settings.device_broker_url.strip()
        scheme = urlsplit(url).scheme
        if scheme not in DEVICE_BROKER_SCHEMES or not urlsplit(url).hostname:
            raise ConfigurationError(
                f"AIDLINK_DEVICE_BROKER_URL {redacted_url(url)} must look like"
                f" mqtts://host:port (schemes: {', '.join(DEVICE_BROKER_SCHEMES)})")
        try:
            return without_userinfo(url)
        except ConfigurationError as exc:
            raise ConfigurationError(f"AIDLINK_DEVICE_BROKER_URL: {exc}") from exc
    try:
        own = mqtt_url(settings)
    except ConfigurationError:
        return None
    parts = urlsplit(own)
    if not parts.hostname:
        return None
    # Only scheme, host and port: the gateway's user and password never go to a device.
    return without_userinfo(urlunsplit((parts.scheme, parts.netloc, "", "", "")))


def server_secret(settings: Settings) -> bytes:
    """The server secret: from AIDLINK_SECRET, else a random one kept under the home (0600)."""
    if settings.secret is not None:
        value = settings.secret.get_secret_value().encode()
        if len(value) < 32:
            raise ConfigurationError("AIDLINK_SECRET must be at least 32 characters")
        return value
    path = settings.home / SECRET_FILE
    if not path.exists():
        settings.home.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first; read theirs
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()


def ca_passphrase(settings: Settings) -> bytes:
    """The passphrase of the CA keys: AIDLINK_CA_PASSPHRASE, else derived from the secret."""
    if settings.ca_passphrase is not None:
        value = settings.ca_passphrase.get_secret_value().encode()
        if len(value) < 16:
            raise ConfigurationError("AIDLINK_CA_PASSPHRASE must be at least 16 characters")
        return value
    # A key of its own, derived one way from the server secret: the secret itself never
    # doubles as the CA passphrase.
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"aidlink ca passphrase v1").derive(server_secret(settings))
    return derived.hex().encode()
