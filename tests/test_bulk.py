"""Bulk onboarding from CSV: refusals by line and rule, savepoints, progress, CLI, bench."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import click
import psycopg
import pytest
from click.testing import CliRunner
from cryptography import x509

from gateway import db
from gateway.bench_bulk import run_bulk_bench
from gateway.cli_bulk import device_bulk
from gateway.settings import Settings
from provisioning import bulk, licences, policy, service
from provisioning.errors import InvalidInputError

PASSPHRASE = b"p" * 24
# Line numbers as the refusals give them: the header is line 1.
GOOD_AND_BAD = """principal,model,serial,firmware,alarm_account,article_number,individual_number
20,sim-bpm,B-1,1.2.0,,A-100,IND-1
99,sim-bpm,B-2,1.2.0,,,
20,sim-scale,S-1,,,,
20,sim-bpm,B-3,1.0.0,,,
20,sim-bpm,B-1,1.2.0,,,
20,sim-bpm,B!bad,1.2.0,,,
20,sim-bpm,B-4,1.2.0,,NOPE,
20,sim-bpm,B-5,1.2.0,,,IND-9
20,sim-bpm,B-6,1.2.0
2080,sim-bpm,P-1,,,,
"""


def _setup(url: str) -> None:
    db.migrate(url)
    with psycopg.connect(url) as conn:
        service.add_principal(conn, "20", "Region Dalarna", "mtls")
        service.add_principal(conn, "2080", "Falun", "password")
        policy.set_policy(conn, "20", {"allowed_models": ["sim-bpm"],
                                       "min_firmware": {"sim-bpm": "1.1.0"}}, "test")
        licences.add_vendor(conn, code="acme", name="Acme")
        licences.add_product(conn, article_number="A-100", name="Acme BPM",
                             product_class="bpm", vendor="acme")
        conn.commit()


def test_good_rows_onboard_and_each_bad_row_is_refused_by_line(database_url: str) -> None:
    _setup(database_url)
    calls: list[tuple[int, int]] = []
    with psycopg.connect(database_url) as conn:
        result = bulk.onboard_csv(conn, PASSPHRASE, GOOD_AND_BAD, actor="test",
                                  progress=lambda done, total: calls.append((done, total)),
                                  batch=3)
    reasons = {refusal["line"]: refusal["reason"] for refusal in result.refused}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert "unknown reference" in reasons[3] and "principal 99" in reasons[3]
    assert "refused by policy" in reasons[4] and "allowed_models" in reasons[4]
    assert "refused by policy" in reasons[5] and "1.1.0" in reasons[5]
    assert "duplicate" in reasons[6] and "line 2" in reasons[6]
    assert "bad value" in reasons[7] and "serial" in reasons[7]
    assert "unknown reference" in reasons[8] and "NOPE" in reasons[8]
    assert "bad value" in reasons[9] and "article number" in reasons[9]
    assert "bad value" in reasons[10] and "7 fields expected" in reasons[10]
    assert all(reason.startswith(f"line {line}: ") for line, reason in reasons.items())
    assert result.counts() == {"rows": 10, "onboarded": 2, "refused": 8}

    mtls, password = result.onboarded
    assert mtls["serial"] == "B-1" and "private_key_pem" in mtls and "mqtt_password" not in mtls
    cert = x509.load_pem_x509_certificate(mtls["certificate_pem"].encode())
    assert mtls["client_id"] in cert.subject.rfc4514_string()
    assert mtls["ca_chain_pem"].count("BEGIN CERTIFICATE") == 2
    assert password["serial"] == "P-1" and password["mqtt_password"]
    assert "certificate_pem" not in password

    # The malformed line is counted up front, then each other row reports once.
    assert calls[0] == (2, 10) and calls[-1] == (10, 10) and len(calls) == 9
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT serial, article_number, individual_number FROM devices"
                              " ORDER BY serial").fetchall()
    assert stored == [("B-1", "A-100", "IND-1"), ("P-1", None, None)]


def test_a_refused_row_does_not_undo_the_others(database_url: str) -> None:
    _setup(database_url)
    text = "principal,model,serial,firmware\n" + "".join(
        f"20,sim-bpm,{serial},{firmware}\n"
        for serial, firmware in (("A-1", "1.2.0"), ("A-2", "0.9"), ("A-3", "1.2.0")))
    with psycopg.connect(database_url) as conn:
        # An open transaction of the caller's own: the batch must still be committed.
        conn.execute("SELECT 1")
        result = bulk.onboard_csv(conn, PASSPHRASE, text, actor="test", batch=500)
    assert [row["serial"] for row in result.onboarded] == ["A-1", "A-3"]
    assert [refusal["line"] for refusal in result.refused] == [3]
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT d.serial, count(c.serial) FROM devices d"
                            " JOIN certificates c ON c.device_id = d.id"
                            " GROUP BY d.serial ORDER BY d.serial").fetchall()
        history = conn.execute("SELECT count(*) FROM device_history"
                               " WHERE action = 'onboarded'").fetchone()
    assert rows == [("A-1", 1), ("A-3", 1)]
    assert history == (2,)


def test_a_bad_header_refuses_the_file(database_url: str) -> None:
    _setup(database_url)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(InvalidInputError, match="column colour: unknown column"):
            bulk.onboard_csv(conn, PASSPHRASE, "principal,model,serial,colour\n", actor="t")
        with pytest.raises(InvalidInputError, match="column serial: the column is missing"):
            bulk.onboard_csv(conn, PASSPHRASE, "principal,model\n", actor="t")
        with pytest.raises(InvalidInputError, match="batch"):
            bulk.onboard_csv(conn, PASSPHRASE, "principal,model,serial\n", actor="t", batch=0)


def _cli() -> click.Group:
    @click.group()
    @click.pass_context
    def main(ctx: click.Context) -> None:
        ctx.ensure_object(dict)["settings"] = Settings()

    main.add_command(device_bulk)
    return main


def _run(url: str, home: Path, args: list[str], stdin: str | None = None) -> Any:
    env = {"AIDLINK_DATABASE_URL": url, "AIDLINK_HOME": str(home), "AIDLINK_SECRET": "s" * 40,
           "AIDLINK_CA_PASSPHRASE": PASSPHRASE.decode()}
    return CliRunner().invoke(_cli(), args, env=env, input=stdin)


def test_cli_writes_private_bundles_and_exits_1_on_refusals(database_url: str,
                                                          tmp_path: Path) -> None:
    _setup(database_url)
    out = tmp_path / "bundles"
    result = _run(database_url, tmp_path / "home", ["bulk", "-", "--out", str(out)],
                  stdin=GOOD_AND_BAD)
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary == {"onboarded": 2, "refused": 8, "out": str(out)}
    assert "line 4: refused by policy" in result.stderr
    assert "onboarded 10/10" in result.stderr  # not a terminal: the plain counter
    written = json.loads((out / "summary.json").read_text())
    assert written["onboarded"] == 2 and len(written["refused_rows"]) == 8
    folders = sorted(path for path in out.iterdir() if path.is_dir())
    assert len(folders) == 2
    names = sorted(sorted(path.name for path in folder.iterdir()) for folder in folders)
    assert names == [["bundle.json"],
                     ["bundle.json", "ca-chain.pem", "certificate.pem", "device.key"]]
    for path in [*out.glob("*/*"), out / "summary.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_cli_exits_0_when_every_row_onboards(database_url: str, tmp_path: Path) -> None:
    _setup(database_url)
    source = tmp_path / "devices.csv"
    source.write_text("principal,model,serial,firmware\n20,sim-bpm,C-1,1.2.0\n")
    result = _run(database_url, tmp_path / "home",
                  ["bulk", str(source), "--out", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["onboarded"] == 1
    assert result.stderr == ""


def test_small_bench(tmp_path: Path) -> None:
    figures = run_bulk_bench(tmp_path / "bulk.json", count=20, password_count=5)
    assert figures["mtls"]["devices"] == figures["mtls"]["certificates"] == 20
    assert figures["password"]["devices"] == 5
    assert figures["devices_per_s"] > 0
    assert json.loads((tmp_path / "bulk.json").read_text()) == figures


def test_bulk_bundles_carry_broker_topic_prefix_and_profile_but_no_gateway_password(
        database_url: str, tmp_path: Path) -> None:
    _setup(database_url)
    text = "principal,model,serial,firmware\n20,sim-bpm,K-1,1.2.0\n2080,sim-scale,K-2,\n"
    gateway_url = "mqtt://aidlink-gateway:gw-pass-51c2@127.0.0.1:1883"
    with psycopg.connect(database_url) as conn:
        result = bulk.onboard_csv(conn, PASSPHRASE, text, actor="test",
                                  broker_url="mqtts://fleet:also-secret@mqtt.example.se:8883")
    assert "also-secret" not in json.dumps(result.onboarded)
    for row, model in zip(result.onboarded, ("sim-bpm", "sim-scale"), strict=True):
        assert row["mqtt_url"] == "mqtts://mqtt.example.se:8883"
        assert row["topic_prefix"] == f"aidlink/v1/{row['client_id']}/"
        assert row["profile"]["model"] == model

    # The command line, given only the gateway's own URL (with its password).
    out = tmp_path / "bundles"
    source = tmp_path / "more.csv"
    source.write_text("principal,model,serial,firmware\n20,sim-bpm,K-3,1.2.0\n")
    env = {"AIDLINK_DATABASE_URL": database_url, "AIDLINK_HOME": str(tmp_path / "home"),
           "AIDLINK_SECRET": "s" * 40, "AIDLINK_CA_PASSPHRASE": PASSPHRASE.decode(),
           "AIDLINK_MQTT_URL": gateway_url, "AIDLINK_DEVICE_BROKER_URL": None}
    cli = CliRunner().invoke(_cli(), ["bulk", str(source), "--out", str(out), "--no-progress"],
                             env=env)
    assert cli.exit_code == 0, cli.output
    [folder] = [path for path in out.iterdir() if path.is_dir()]
    bundle = json.loads((folder / "bundle.json").read_text())
    assert bundle["mqtt_url"] == "mqtt://127.0.0.1:1883"
    assert bundle["topic_prefix"] == f"aidlink/v1/{bundle['client_id']}/"
    assert bundle["profile"]["model"] == "sim-bpm"
    written = "".join(path.read_text() for path in out.rglob("*") if path.is_file())
    assert "gw-pass-51c2" not in written and "gw-pass-51c2" not in cli.output
