"""A hub with its own client certificate, on a Mosquitto configured by `aidlink broker-config`:
the broker lets it publish under its own client id, the gateway checks the pairing."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime
from decimal import Decimal

from provisioning import service
from provisioning.broker_config import GATEWAY_USER
from simulators.bpm import BpReading, encode
from tests.broker_site import GATEWAY_PASSWORD, HOST, Session, Site, running_broker
from tests.support import count, running_gateway, wait_for


def _reading() -> bytes:
    return encode(BpReading(systolic=Decimal(131), diastolic=Decimal(84), mean=Decimal(99),
                            pulse=Decimal(66), measured_at=datetime.now(UTC).replace(
                                microsecond=0), user_id=1, status=0))


def _cuff(site: Site, serial: str, hub: str) -> str:
    cuff = str(service.onboard_device(site.conn, principal="20", model="sim-bpm",
                                      serial=serial, actor="test")["device_id"])
    service.pair(site.conn, peripheral_id=cuff, hub_id=hub, actor="test")
    return cuff


def test_a_hub_on_its_certificate_is_refused_for_a_peripheral_not_paired_with_it(
        site: Site, database_url: str) -> None:
    hub, other_hub = site.devices["a1"], site.devices["a2"]
    paired, foreign = _cuff(site, "C-1", hub), _cuff(site, "C-2", other_hub)
    # The gateway on its own loopback listener and credentials, as broker-config set them up.
    gateway_url = f"mqtt://{GATEWAY_USER}:{GATEWAY_PASSWORD}@{HOST}:{site.ports['plain']}"

    def dead(device: str) -> int:
        return count(database_url, "SELECT count(*) FROM dead_letters WHERE device_id = %s"
                                   " AND reason = 'unpaired_peripheral'", device)

    def stored(device: str) -> int:
        return count(database_url, "SELECT count(*) FROM observations WHERE device_id = %s",
                     device)

    with running_broker(site), running_gateway(database_url, gateway_url) as gateway, \
            ExitStack() as stack:
        client = Session(site.ports["mtls"], hub, context=site.context("a1"))
        stack.callback(client.close)
        # Under its own client id, so the broker's ACL lets it through to the gateway.
        client.publish(f"aidlink/v1/{hub}/{foreign}/ble/2a35", _reading())
        wait_for(lambda: dead(foreign), 10, "the unpaired peripheral's dead letter")
        assert stored(foreign) == 0
        assert client.drops == 0
        client.publish(f"aidlink/v1/{hub}/{paired}/ble/2a35", _reading())
        wait_for(lambda: stored(paired) == 4, 10, "the paired peripheral's reading")
        totals = gateway.totals
    with site.conn.cursor() as cur:
        cur.execute("SELECT client_id, device_id, principal_code, detail FROM dead_letters")
        letters = cur.fetchall()
    assert letters == [(hub, foreign, "20",
                        f"device {foreign} is not paired with client {hub}")]
    assert (dead(paired), stored(foreign)) == (0, 0)
    assert (totals.stored_messages, totals.observations_new) == (1, 4)
