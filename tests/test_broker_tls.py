"""The written broker configuration against a real Mosquitto over TLS: ACL, CRL, SIGHUP."""

from __future__ import annotations

import os
import ssl
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning import pki, service
from provisioning.broker_config import ACL_TEXT, GATEWAY_USER, reload_broker
from provisioning.policy import set_policy
from tests.broker_site import (
    ACCEPTED,
    GATEWAY_PASSWORD,
    HOST,
    NOT_AUTHORISED,
    PASSPHRASE,
    TLS_REFUSED,
    Session,
    Site,
    certify,
    configure,
    running_broker,
)
from tests.support import wait_for


def test_a_device_publishes_and_reads_only_under_its_own_client_id(site: Site) -> None:
    a1, a2 = site.devices["a1"], site.devices["a2"]
    with running_broker(site), ExitStack() as stack:
        gateway = Session(site.ports["plain"], GATEWAY_USER, username=GATEWAY_USER,
                          password=GATEWAY_PASSWORD)
        stack.callback(gateway.close)
        assert gateway.subscribe("aidlink/v1/#") == [1]
        other = Session(site.ports["mtls"], a2, context=site.context("a2"))
        stack.callback(other.close)
        other.subscribe(f"aidlink/v1/{a2}/down/#")
        spoofer = Session(site.ports["mtls"], a1, context=site.context("a1"))
        spoofer.publish(f"aidlink/v1/{a1}/{a1}/status", b"ok")
        spoofer.client.publish(f"aidlink/v1/{a2}/{a2}/status", b"spoofed", qos=1)
        # Mosquitto drops the publish and closes the connection (MQTT-3.3.5-2 allows it).
        wait_for(lambda: spoofer.drops, 5, "the broker to close the spoofer's connection")
        spoofer.close()
        # The certificate, not the client id asked for, decides who a1 is: no session takeover.
        device = Session(site.ports["mtls"], a2, context=site.context("a1"))
        stack.callback(device.close)
        granted = [device.subscribe(f"aidlink/v1/{a2}/down/#"),
                   device.subscribe("aidlink/v1/+/down/#")]
        device.publish(f"aidlink/v1/{a1}/{a1}/status", b"done")
        wait_for(lambda: len(gateway.messages) >= 2, 5, "the gateway to see a1's messages")
        uplink = list(gateway.messages)
        gateway.publish(f"aidlink/v1/{a2}/down/wipe", b"for a2")
        gateway.publish(f"aidlink/v1/{a1}/down/time", b"for a1")
        wait_for(lambda: device.messages, 5, "a1's command")
        wait_for(lambda: other.messages, 5, "a2's command")
        assert (other.drops, device.drops) == (0, 0)
    assert uplink == [(f"aidlink/v1/{a1}/{a1}/status", b"ok"),
                      (f"aidlink/v1/{a1}/{a1}/status", b"done")]
    # Mosquitto grants the subscriptions but delivers only what a1 may read.
    assert granted == [[1], [1]]
    assert device.messages == [(f"aidlink/v1/{a1}/down/time", b"for a1")]
    assert other.messages == [(f"aidlink/v1/{a2}/down/wipe", b"for a2")]


def test_revocation_takes_effect_on_sighup_without_dropping_other_sessions(site: Site) -> None:
    a1, a2, b1 = site.devices["a1"], site.devices["a2"], site.devices["b1"]
    with running_broker(site) as broker, ExitStack() as stack:
        gateway = Session(site.ports["plain"], GATEWAY_USER, username=GATEWAY_USER,
                          password=GATEWAY_PASSWORD)
        stack.callback(gateway.close)
        assert gateway.subscribe("aidlink/v1/#") == [1]
        kept = Session(site.ports["mtls"], a1, context=site.context("a1"))
        stack.callback(kept.close)
        assert kept.subscribe(f"aidlink/v1/{a1}/down/#") == [1]
        pki.revoke(site.conn, PASSPHRASE, b1, "key_compromise", "test")
        site.refresh(sighup=False)
        # Falun's CRL is the last of four in crl.pem; until the SIGHUP the broker uses the old.
        before_sighup = site.probe("mtls", site.context("b1"), b1)
        revoked = Session(site.ports["mtls"], b1, context=site.context("b1"))
        stack.callback(revoked.close)
        assert revoked.subscribe(f"aidlink/v1/{b1}/down/#") == [1]
        reload_broker(broker.pid)
        wait_for(lambda: "Reloading config." in site.log(), 5, "the reload")
        after_sighup = site.probe("mtls", site.context("b1"), b1)
        other = site.probe("mtls", site.context("a2"), a2)
        # Mosquitto checks certificates at the handshake only, so b1's session is still open,
        # but the ACL's deny section for b1 now applies to it: it receives nothing ...
        gateway.publish(f"aidlink/v1/{b1}/down/time", b"for b1")
        gateway.publish(f"aidlink/v1/{a1}/down/time", b"for a1")
        wait_for(lambda: kept.messages, 5, "a1's command")
        open_after_reload = revoked.client.is_connected()
        # ... and the broker drops its publish and closes its connection.
        revoked.client.publish(f"aidlink/v1/{b1}/{b1}/status", b"after revocation", qos=1)
        wait_for(lambda: revoked.drops, 5, "the broker to close b1's session")
        kept.publish(f"aidlink/v1/{a1}/{a1}/status", b"still here")
        wait_for(lambda: any(topic.endswith("/status") for topic, _ in gateway.messages), 5,
                 "a1's status at the gateway")
        sessions = {"a1": (kept.client.is_connected(), kept.drops), "b1 dropped": revoked.drops > 0}
        uplink = [m for m in gateway.messages if "/down/" not in m[0]]
        received_by_b1 = list(revoked.messages)
        # CRLs signed by a clock an hour ahead are not yet valid to the broker. Had it kept
        # the previous CRLs beside them, OpenSSL would fall back on those; it refuses instead.
        site.refresh(now=datetime.now(UTC) + timedelta(hours=1))
        future = site.probe("mtls", site.context("a2"), a2)
    assert (before_sighup, after_sighup, other, future) == (
        ACCEPTED, TLS_REFUSED, ACCEPTED, TLS_REFUSED)
    assert open_after_reload
    assert received_by_b1 == []
    assert uplink == [(f"aidlink/v1/{a1}/{a1}/status", b"still here")]
    assert sessions == {"a1": (True, 0), "b1 dropped": True}
    assert f"user {b1}\ntopic deny aidlink/v1/#\n" in (site.out / "acl").read_text()


def test_expired_foreign_and_missing_certificates_are_refused(site: Site) -> None:
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site.devices["a1"])])
    now = datetime.now(UTC)
    foreign = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(foreign_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
               .sign(foreign_key, hashes.SHA256()))
    files = site.out.parent / "devices"
    (files / "foreign.key").write_bytes(foreign_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (files / "foreign.chain.pem").write_bytes(foreign.public_bytes(serialization.Encoding.PEM))
    with running_broker(site):
        outcomes = {name: site.probe("mtls", site.context(name), site.devices.get(name, name))
                    for name in ("a1", "x1", "foreign")}
        outcomes["none"] = site.probe("mtls", site.context(), "nobody")
    assert outcomes == {"a1": ACCEPTED, "x1": TLS_REFUSED, "foreign": TLS_REFUSED,
                        "none": TLS_REFUSED}


def test_passwords_work_only_where_the_policy_allows_them(site: Site) -> None:
    p1, q1 = site.devices["p1"], site.devices["q1"]
    with running_broker(site):
        tls = site.context()
        outcomes = {
            "p1": site.probe("password", tls, p1, p1, site.passwords["p1"]),
            "p1 wrong password": site.probe("password", tls, p1, p1, "not-" + site.passwords["p1"]),
            "q1 (policy now mtls)": site.probe("password", tls, q1, q1, site.passwords["q1"]),
            "p1 on the mTLS listener": site.probe("mtls", tls, p1, p1, site.passwords["p1"]),
            "gateway": site.probe("plain", None, GATEWAY_USER, GATEWAY_USER, GATEWAY_PASSWORD),
            "anonymous": site.probe("plain", None, "anon"),
        }
        session = Session(site.ports["password"], p1, context=tls, username=p1,
                          password=site.passwords["p1"])
        try:
            pki.revoke(site.conn, PASSPHRASE, p1, "cessation_of_operation", "test")
            site.refresh()
            # Unlike a certificate, a removed password ends the open session on reload.
            wait_for(lambda: session.drops, 5, "p1's session to be dropped")
            outcomes["p1 revoked"] = site.probe("password", tls, p1, p1, site.passwords["p1"])
        finally:
            session.close()
    assert outcomes == {
        "p1": ACCEPTED, "p1 wrong password": NOT_AUTHORISED,
        "q1 (policy now mtls)": NOT_AUTHORISED, "p1 on the mTLS listener": TLS_REFUSED,
        "gateway": ACCEPTED, "anonymous": NOT_AUTHORISED, "p1 revoked": NOT_AUTHORISED,
    }


def test_sighup_loads_a_new_principals_intermediate_and_crl(site: Site) -> None:
    service.add_principal(site.conn, "2026", "Gagnef")
    n1 = certify(site, "n1", "2026")
    with running_broker(site):
        site.refresh(sighup=False)
        # Even with its chain, n1 is refused while the broker has no CRL of Gagnef's CA.
        before = [site.probe("mtls", site.context("n1", chain=chain), n1)
                  for chain in (True, False)]
        site.refresh()
        after = site.probe("mtls", site.context("n1", chain=False), n1)
    assert (before, after) == ([TLS_REFUSED, TLS_REFUSED], ACCEPTED)


def test_the_strictest_policy_sets_the_minimum_tls_version(site: Site) -> None:
    a1 = site.devices["a1"]
    with running_broker(site):
        before = [site.probe("mtls", site.context("a1", tls=v), a1)
                  for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)]
    set_policy(site.conn, "2080", {"min_tls_version": "1.3"}, "test")
    assert configure(site)["tls_version"] == "tlsv1.3"
    with running_broker(site):
        after = [site.probe("mtls", site.context("a1", tls=v), a1)
                 for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)]
    assert (before, after) == ([ACCEPTED, ACCEPTED], [TLS_REFUSED, ACCEPTED])


def test_the_written_files(site: Site) -> None:
    out, ports = site.out, site.ports
    user = "user root\n" if os.geteuid() == 0 else ""
    tls = (f"certfile {out}/server.pem\nkeyfile {out}/server.key\ncafile {out}/ca-chain.pem\n"
           "tls_version tlsv1.2\n")
    assert (out / "mosquitto.conf").read_text() == (
        "# Generated by aidlink broker-config; rewritten on every run. SIGHUP reloads the\n"
        "# certificate, key, CRL, password and ACL files without dropping sessions.\n"
        f"per_listener_settings false\nallow_anonymous false\npassword_file {out}/passwords\n"
        f"acl_file {out}/acl\n{user}pid_file {out}/mosquitto.pid\npersistence true\n"
        f"persistence_location {out}/data/\n"
        "autosave_interval 1\nmax_inflight_messages 1000\nmax_queued_messages 0\n"
        "max_queued_bytes 0\nqueue_qos0_messages false\npersistent_client_expiration 30d\n"
        "set_tcp_nodelay true\nlog_dest stderr\nlog_type error\n"
        "log_type warning\nlog_type notice\nlog_type information\n\n"
        "# Devices with certificates: the CN is the username and the client id.\n"
        f"listener {ports['mtls']} {HOST}\n{tls}crlfile {out}/crl.pem\n"
        "require_certificate true\nuse_identity_as_username true\n"
        "use_username_as_clientid true\n\n"
        "# Devices of principals whose policy allows passwords, over TLS.\n"
        f"listener {ports['password']} {HOST}\n{tls}use_username_as_clientid true\n\n"
        "# The gateway and local tools: loopback only, passwords, no TLS.\n"
        f"listener {ports['plain']} 127.0.0.1\n")
    assert (out / "acl").read_text() == ACL_TEXT
    users = [line.split(":")[0] for line in (out / "passwords").read_text().splitlines()]
    assert users == [GATEWAY_USER, site.devices["p1"]]
    modes = {name: (out / name).stat().st_mode & 0o777 for name in ("server.key", "passwords")}
    assert modes == {"server.key": 0o600, "passwords": 0o600}
    end = "-----END X509 CRL-----\n"
    blocks = [block + end for block in (out / "crl.pem").read_text().split(end) if block]
    issuers = [x509.load_pem_x509_crl(block.encode()).issuer.rfc4514_string()
               for block in blocks]
    assert issuers == [f"CN=aidlink principal {code} CA,O=aidlink"
                       for code in ("20", "2021", "2023", "2080")]
    (server,) = x509.load_pem_x509_certificates((out / "server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(name.value) for name in names] == ["localhost", "127.0.0.1"]
