"""Trunk registration with digest auth against a SIPp registrar on 127.0.0.1: challenge,
refresh before expiry, a wrong password, and the PBX restarting."""

import pytest

from fenliu.sip import protocol as P
from fenliu.sip.link import WorkerLink
from tests.conftest import free_port, rtp_block, wait_udp_bound
from tests.sip.peers import fact
from tests.sip.sipp import registrar_scenario, start_sipp_server

pytestmark = pytest.mark.slow


def registered(f):
    return isinstance(f, P.Registration) and f.code == 200


def test_registers_with_digest_auth_refreshes_and_survives_a_pbx_restart(tmp_path):
    port = free_port(2)
    pbx = start_sipp_server(registrar_scenario("fenliu0", "s3cret", expires=10, refreshes=1), port, tmp_path)
    wait_udp_bound(port)
    link = WorkerLink.loopback("reg", free_port(2), rtp_block(),
                               registrar=f"sip:127.0.0.1:{port}", reg_user="fenliu0", reg_password="s3cret",
                               reg_expires=10, reg_retry=2)
    link.start()
    try:
        first = link.wait(registered, timeout=10)
        assert first.active and first.expires <= 10
        n = link.mark()
        link.wait(registered, timeout=15, since=n)  # refreshed before expiry
        assert pbx.wait(15) == 0  # the registrar saw challenge, good digest and the refresh
        # the PBX restarts (a new process, fresh state): the next refresh is challenged again
        pbx = start_sipp_server(registrar_scenario("fenliu0", "s3cret", expires=10, refreshes=0), port, tmp_path)
        n = link.mark()
        link.wait(registered, timeout=20, since=n)
        assert pbx.wait(15) == 0
    finally:
        if pbx.poll() is None:
            pbx.kill()
        assert link.stop() == 0


def test_a_wrong_password_is_reported(tmp_path):
    port = free_port(2)
    pbx = start_sipp_server(registrar_scenario("fenliu0", "right", expires=10, refreshes=0), port, tmp_path)
    wait_udp_bound(port)
    link = WorkerLink.loopback("badreg", free_port(2), rtp_block(),
                               registrar=f"sip:127.0.0.1:{port}", reg_user="fenliu0", reg_password="wrong",
                               reg_retry=60)
    link.start()
    try:
        ev = link.wait(fact(P.Registration), timeout=10)
        assert ev.code == 403 and not ev.active
    finally:
        if pbx.poll() is None:
            pbx.kill()
        assert link.stop() == 0
