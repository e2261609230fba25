"""The pjsua2 set-up every process of ours uses (FIELD-NOTES): main-thread-only callbacks
driven by ``libHandleEvents``, a null sound device, a 16 kHz bridge without VAD or echo
canceller, one UDP transport bound to an address, G.711 preferred to match a trunk."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pjsua2 as pj

CLOCK_RATE = 16000


def start_endpoint(ep: pj.Endpoint, address: str, port: int, user_agent: str, max_calls: int = 4,
                   codecs: tuple[str, ...] = ("PCMA/8000/1", "PCMU/8000/1", "G722/16000/1", "L16/44100/1"),
                   exclusive: bool = False, max_media_ports: int = 0, transports: tuple[str, ...] = ("udp",),
                   tls_port: int = 0, tls_cert: str = "", tls_key: str = "") -> list[str]:
    """Create, initialise and start ``ep`` with ``codecs`` preferred in that order (``exclusive``:
    offer nothing else); returns the codecs it did not know. ``transports``: "udp" and "tcp" on
    ``port``, "tls" on ``tls_port`` (with ``tls_cert``/``tls_key`` PEM files to serve; a caller-only
    peer needs none). IPv4 only: the pjsua2 wheel is built without IPv6 media (settings say so)."""
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.maxCalls = max_calls
    cfg.uaConfig.userAgent = user_agent
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    cfg.medConfig.clockRate = CLOCK_RATE
    cfg.medConfig.sndClockRate = CLOCK_RATE
    cfg.medConfig.noVad = True
    cfg.medConfig.ecTailLen = 0
    if max_media_ports:
        cfg.medConfig.maxMediaPorts = max_media_ports
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    kinds = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP, "tls": pj.PJSIP_TRANSPORT_TLS}
    for name in transports:
        tcfg = pj.TransportConfig()
        tcfg.port = tls_port if name == "tls" else port
        tcfg.boundAddress = address
        if name == "tls":
            tcfg.tlsConfig.certFile, tcfg.tlsConfig.privKeyFile = tls_cert, tls_key
        ep.transportCreate(kinds[name], tcfg)
    ep.libStart()
    unknown = []
    if exclusive:
        for info in ep.codecEnum2():
            ep.codecSetPriority(info.codecId, 0)
    for i, codec in enumerate(codecs):
        try:
            ep.codecSetPriority(codec, 250 - i)
        except pj.Error:
            unknown.append(codec)
    return unknown


def account_config(uri: str, address: str, rtp_port: int, rtp_range: int) -> pj.AccountConfig:
    """A local account (no registrar) whose RTP stays in its own port range on ``address``."""
    acfg = pj.AccountConfig()
    acfg.idUri = uri
    acfg.mediaConfig.transportConfig.port = rtp_port
    acfg.mediaConfig.transportConfig.portRange = rtp_range
    acfg.mediaConfig.transportConfig.boundAddress = address
    # no SIP outbound (RFC 5626): our Contact names the listening port of the transport a dialog
    # uses, so in-dialog requests over TCP/TLS come to a port that takes connections
    acfg.natConfig.sipOutboundUse = 0
    return acfg


def serve_until_signalled(ua: Any, report_start_error: Callable[[str], None]) -> int:
    """Run a user agent process (``ua.start/run/stop``, ``ua.running``, ``ua.ep``) until
    SIGTERM/SIGINT or ``ua.running`` goes false. A start failure is reported, the endpoint is
    destroyed (no abort at exit) and the exit code is 3."""

    def on_term(_sig: int, _frm: object) -> None:
        ua.running = False

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        ua.start()
    except pj.Error as e:
        report_start_error(e.info())
        ua.account = None
        ua.ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
        return 3
    try:
        ua.run()
    finally:
        ua.stop()
    return 0
