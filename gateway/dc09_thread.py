"""Run the DC-09 receiver beside the gateway: its own thread and event loop, frames fed into
the gateway's pipeline and acknowledged to the alarm unit only after the commit."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import psycopg

from gateway.dc09_server import Dc09Server
from gateway.ingest.pipeline import Gateway
from provisioning.service import client_of_alarm_account

CHANNEL = "dc09"


class Dc09Receiver:
    """A started DC-09 receiver on 127.0.0.1 or another host, stopped with ``stop()``."""

    def __init__(self, gateway: Gateway, database_url: str, *, host: str, port: int) -> None:
        self._gateway = gateway
        self._database_url = database_url
        self._loop = asyncio.new_event_loop()
        self._server = Dc09Server(host, port, account_client=self._client_of,
                                  submit=self._submit)
        self._thread = threading.Thread(target=self._loop.run_forever, name="aidlink-dc09",
                                        daemon=True)
        self.port = 0

    def start(self) -> int:
        """Start listening; returns the bound port."""
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(10)
        return self.port

    def stop(self) -> None:
        """Stop listening and end the thread."""
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _client_of(self, account: str) -> str | None:
        # Called in a worker thread by the server; a short connection keeps it independent
        # of the writer's.
        with psycopg.connect(self._database_url, connect_timeout=5) as conn:
            return client_of_alarm_account(conn, account)

    def _submit(self, client_id: str, frame: bytes) -> Future[bool]:
        return self._gateway.submit(f"aidlink/v1/{client_id}/{client_id}/{CHANNEL}", frame)
