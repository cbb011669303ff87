"""Policies, certificates from CSRs, refusals by policy, revocation and broker configuration
from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway import db
from gateway.cli import main


class Cli:
    """The command line against one database."""

    def __init__(self, url: str, home: Path) -> None:
        self.env = {"AIDLINK_DATABASE_URL": url, "AIDLINK_HOME": str(home),
                    "AIDLINK_SECRET": "s" * 40, "AIDLINK_CA_PASSPHRASE": "p" * 24}

    def __call__(self, *args: str, code: int = 0) -> str:
        result = CliRunner().invoke(main, list(args), env=self.env)
        assert result.exit_code == code, result.output
        return result.output

    def json(self, *args: str) -> Any:
        return json.loads(self(*args))


def _csr(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> Path:
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")]))
               .sign(key, hashes.SHA256()))
    path.write_bytes(request.public_bytes(serialization.Encoding.PEM))
    return path


def test_policy_versions_refusals_csr_and_revocation(database_url: str, tmp_path: Path) -> None:
    db.migrate(database_url)
    cli = Cli(database_url, tmp_path / "home")
    cli("principal", "add", "2080", "--name", "Falun")
    shown = cli.json("policy", "show", "2080")
    assert (shown["version"], shown["policy"]["device_auth"]) == (0, "mtls")
    changed = cli.json("policy", "set", "2080", "--set", 'allowed_models=["sim-bpm"]',
                       "--set", 'min_firmware={"sim-bpm": "1.1.0"}')
    assert changed["version"] == 1

    refused = cli("device", "onboard", "--principal", "2080", "--model", "sim-scale",
                  "--serial", "S-1", code=1)
    assert "sim-scale" in refused and "allowed_models" in refused
    old = cli("device", "onboard", "--principal", "2080", "--model", "sim-bpm",
              "--serial", "B-0", "--firmware", "1.0.0", code=1)
    assert "1.0.0" in old and "1.1.0" in old

    key = ec.generate_private_key(ec.SECP256R1())
    device = cli.json("device", "onboard", "--principal", "2080", "--model", "sim-bpm",
                      "--serial", "B-1", "--firmware", "1.1.0",
                      "--csr", str(_csr(tmp_path / "b1.csr", key)))
    certificate = x509.load_pem_x509_certificate(device["certificate_pem"].encode())
    assert certificate.public_key() == key.public_key()
    assert "private_key_pem" not in device  # the device keeps its own key
    assert device["topic_prefix"] == f"aidlink/v1/{device['client_id']}/"
    assert device["profile"]["model"] == "sim-bpm"
    assert device["profile"]["reporting_interval_s"] == 86400

    renewed = cli.json("device", "renew", device["device_id"],
                       "--csr", str(_csr(tmp_path / "b1-renew.csr", key)))
    assert renewed["certificate_serial"] != device["certificate_serial"]
    assert "private_key_pem" not in renewed
    cli("device", "renew", code=2)

    weak = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = cli("device", "onboard", "--principal", "2080", "--model", "sim-bpm",
                  "--serial", "B-2", "--firmware", "1.1.0",
                  "--csr", str(_csr(tmp_path / "b2.csr", weak)), code=1)
    assert "RSA" in refused and "EC-P256" in refused

    cli.json("policy", "set", "2080", "--set", 'min_firmware={"sim-bpm": "1.2.0"}')
    failing = [json.loads(line) for line in cli("policy", "check", code=1).splitlines()]
    assert [row["device_id"] for row in failing] == [device["device_id"]]

    revoked = cli.json("device", "revoke", device["device_id"], "--reason", "key_compromise")
    assert revoked["device_id"] == device["device_id"]
    out = tmp_path / "broker"
    written = cli.json("broker-config", "--out", str(out), "--listener-port", "18883")
    assert written
    conf = (out / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf and "18883" in conf
    assert "pattern write aidlink/v1/%u/#" in (out / "acl").read_text()
    assert _server_names(out) == ["localhost", "127.0.0.1"]
    named = tmp_path / "named"
    cli.json("broker-config", "--out", str(named), "--server-name", "mqtt.region.example",
             "--server-name", "10.0.0.5")
    assert _server_names(named) == ["mqtt.region.example", "10.0.0.5"]


def _server_names(broker_dir: Path) -> list[str]:
    """The names in the broker certificate written to ``broker_dir``, in order."""
    certificate = x509.load_pem_x509_certificate((broker_dir / "server.pem").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in names]
