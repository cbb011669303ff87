"""SCAIP (SS 91100) request builders: the ``<mrq>`` bodies social alarms send (PROTOCOLS §4).

Elements come out in the order the Essence, Possum, Telealarm and Doro captures use
(ref, mty, cid, dty, did, stc, lco, crd, cha, then ``<lge>``). Numeric codes are zero-padded
to ``pad`` digits, as Telealarm pads to four ("0002") and Possum sends none (``pad=1``), so
simulated devices exercise trap 10 the way real ones do. Replies are read with
``adapters.scaip.read_reply``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from xml.sax.saxutils import escape


@dataclass(frozen=True, slots=True)
class Position:
    """A mobile alarm's position: decimal degrees as ``<lge><geo>lat,lon</geo>``."""

    lat: Decimal
    lon: Decimal
    time: str | None = None


def _code(value: int, pad: int) -> str:
    return f"{value:0{pad}d}"


def request(
    ref: str,
    cid: str,
    dty: int,
    *,
    mty: str | None = "ME",
    stc: int | None = None,
    did: str | None = None,
    lco: int | None = None,
    crd: Sequence[str] = (),
    cha: int | None = None,
    position: Position | None = None,
    pad: int = 4,
) -> bytes:
    """One ``<mrq>``; ``mty=None`` omits the element (the receiver then assumes ME)."""
    parts = [("ref", ref)]
    if mty is not None:
        parts.append(("mty", mty))
    parts += [("cid", cid), ("dty", _code(dty, pad))]
    if did is not None:
        parts.append(("did", did))
    if stc is not None:
        parts.append(("stc", _code(stc, pad)))
    if lco is not None:
        parts.append(("lco", _code(lco, 3)))
    parts += [("crd", value) for value in crd]
    if cha is not None:
        parts.append(("cha", str(cha)))
    body = "".join(f"<{tag}>{escape(text)}</{tag}>" for tag, text in parts)
    if position is not None:
        lge = f"<geo>{position.lat},{position.lon}</geo>"
        if position.time is not None:
            lge += f"<tim>{escape(position.time)}</tim>"
        body += f"<lge>{lge}</lge>"
    return f"<mrq>{body}</mrq>".encode()


def heartbeat(ref: str, cid: str, *, dty: int = 2, pad: int = 4) -> bytes:
    """A PI heartbeat from the local unit (dty 2), as the alarm sends it periodically."""
    return request(ref, cid, dty, mty="PI", pad=pad)


def alarm(
    ref: str,
    cid: str,
    dty: int,
    stc: int = 10,
    *,
    crd: Sequence[str] = ("gsm:",),
    position: Position | None = None,
    pad: int = 4,
) -> bytes:
    """An ME alarm: by default a manual alarm (stc 10) with a GSM voice path."""
    lco = 35 if position is not None else None  # 035: GPS position attached
    return request(ref, cid, dty, stc=stc, crd=crd, lco=lco, position=position, pad=pad)
