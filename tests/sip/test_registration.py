"""Trunk registration with digest auth against a SIPp registrar on 127.0.0.1: challenge,
refresh before expiry, a wrong password, and the PBX restarting."""

import time

import pytest

from fenliu.sip.link import WorkerLink
from tests.conftest import free_port
from tests.sip.sipp import registrar_scenario, start_sipp_server

pytestmark = pytest.mark.slow


def registered(e):
    return e["event"] == "registration" and e["code"] == 200


def test_registers_with_digest_auth_refreshes_and_survives_a_pbx_restart(tmp_path):
    port = free_port(2)
    pbx = start_sipp_server(registrar_scenario("fenliu0", "s3cret", expires=10, refreshes=1), port, tmp_path)
    time.sleep(0.5)
    link = WorkerLink("reg", sip_port=free_port(2), rtp_port=free_port(2) // 2 * 2,
                      registrar=f"sip:127.0.0.1:{port}", reg_user="fenliu0", reg_password="s3cret",
                      reg_expires=10, reg_retry=2)
    link.start()
    try:
        first = link.wait_event(registered, timeout=10)
        assert first["active"] and first["expires"] <= 10
        link.wait_event(registered, timeout=15)  # refreshed before expiry
        assert pbx.wait(15) == 0  # the registrar saw challenge, good digest and the refresh
        # the PBX restarts (a new process, fresh state): the next refresh is challenged again
        pbx = start_sipp_server(registrar_scenario("fenliu0", "s3cret", expires=10, refreshes=0), port, tmp_path)
        link.wait_event(registered, timeout=20)
        assert pbx.wait(15) == 0
    finally:
        if pbx.poll() is None:
            pbx.kill()
        assert link.stop() == 0


def test_a_wrong_password_is_reported(tmp_path):
    port = free_port(2)
    pbx = start_sipp_server(registrar_scenario("fenliu0", "right", expires=10, refreshes=0), port, tmp_path)
    time.sleep(0.5)
    link = WorkerLink("badreg", sip_port=free_port(2), rtp_port=free_port(2) // 2 * 2,
                      registrar=f"sip:127.0.0.1:{port}", reg_user="fenliu0", reg_password="wrong", reg_retry=60)
    link.start()
    try:
        ev = link.wait_event(lambda e: e["event"] == "registration", timeout=10)
        assert ev["code"] == 403 and not ev["active"]
    finally:
        if pbx.poll() is None:
            pbx.kill()
        assert link.stop() == 0
