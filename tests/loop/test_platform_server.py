"""The fake 12345 platform / SMS gateway itself: dedupe, injected failures, held answers, mTLS."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.loop.platform_server import FakePlatform, TestPki, make_test_pki

ORDER = {"call_id": "c1", "category": "噪声扰民", "text": "楼上装修太吵"}
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def post(url: str, body: Any, key: str | None = None, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """POST JSON with urllib; (status, JSON answer) also for error statuses."""
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with _opener.open(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def platform() -> Iterator[FakePlatform]:
    with FakePlatform() as p:
        yield p


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def test_orders_and_sms_are_deduplicated_by_idempotency_key(platform: FakePlatform) -> None:
    status, first = post(platform.url + "/orders", ORDER, key="k1")
    assert status == 201 and first["order_no"].startswith("GD") and first["status"] == "accepted"
    assert post(platform.url + "/orders", ORDER, key="k1") == (200, first)
    status, other = post(platform.url + "/orders", ORDER, key="k2")
    assert status == 201 and other["order_no"] != first["order_no"]
    assert set(platform.orders) == {"k1", "k2"} and platform.orders["k1"]["body"] == ORDER
    # a key reused for something else, or no key at all, is the client's bug
    assert post(platform.url + "/orders", {**ORDER, "call_id": "c2"}, key="k1")[0] == 422
    assert post(platform.url + "/orders", ORDER)[0] == 400
    status, sms = post(platform.url + "/sms", {"to": "13800000000", "text": "已转 12345"}, key="s1")
    assert status == 201 and sms["status"] == "queued"
    assert post(platform.url + "/sms", {"to": "13800000000", "text": "已转 12345"}, key="s1") == (200, sms)
    assert len(platform.messages) == 1 and len(platform.orders) == 2
    assert len(platform.requests) == 7
    assert platform.requests[0]["headers"]["Idempotency-Key"] == "k1" and platform.requests[0]["json"] == ORDER


def test_unknown_paths_are_recorded_and_answer_404(platform: FakePlatform) -> None:
    assert post(platform.url + "/callbacks/visit", {"x": 1}, key="v")[0] == 404
    assert platform.wait_for_requests(1, path="/callbacks/visit")[0]["json"] == {"x": 1}


def test_fail_n_answers_errors_and_creates_nothing(platform: FakePlatform) -> None:
    platform.fail(2, status=503, retry_after=1.5)
    assert post(platform.url + "/orders", ORDER, key="k")[0] == 503
    req = urllib.request.Request(platform.url + "/orders", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        _opener.open(req, timeout=5)
    assert err.value.code == 503 and err.value.headers["Retry-After"] == "1.5"
    assert platform.orders == {}
    assert post(platform.url + "/orders", ORDER, key="k")[0] == 201
    assert len(platform.requests) == 3 and len(platform.orders) == 1


def test_timeout_loses_the_answer_but_the_order_exists(platform: FakePlatform) -> None:
    platform.timeout(1)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        post(platform.url + "/orders", ORDER, key="k", timeout=0.5)
    assert time.monotonic() - t0 < 5
    status, again = post(platform.url + "/orders", ORDER, key="k")
    assert status == 200 and again["order_no"] == platform.orders["k"]["order_no"]


def test_slow_delays_every_answer(platform: FakePlatform) -> None:
    platform.slow(0.3)
    t0 = time.monotonic()
    assert post(platform.url + "/orders", ORDER, key="a")[0] == 201
    assert post(platform.url + "/sms", {"to": "1"}, key="b")[0] == 201
    assert time.monotonic() - t0 >= 0.6
    platform.slow(0)


def test_hold_keeps_the_answer_until_release(platform: FakePlatform) -> None:
    platform.hold()
    result: list[tuple[int, dict[str, Any]]] = []
    client = threading.Thread(target=lambda: result.append(post(platform.url + "/orders", ORDER, key="h")))
    client.start()
    platform.wait_for_requests(1)
    client.join(0.3)
    assert client.is_alive() and result == [] and "h" in platform.orders  # done, not acknowledged
    platform.release()
    client.join(5)
    assert result and result[0][0] == 201 and result[0][1]["order_no"] == platform.orders["h"]["order_no"]


def test_a_client_killed_while_held_can_retry_with_its_key(platform: FakePlatform) -> None:
    platform.hold()
    code = ("import json, sys, urllib.request as u\n"
            "r = u.Request(sys.argv[1], data=json.dumps({'call_id': 'c9'}).encode(), method='POST',\n"
            "              headers={'Content-Type': 'application/json', 'Idempotency-Key': 'kill-me'})\n"
            "u.build_opener(u.ProxyHandler({})).open(r, timeout=60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, platform.url + "/orders"])
    try:
        platform.wait_for_requests(1, timeout=10)
    finally:
        proc.kill()
        proc.wait(10)
    platform.release()
    status, answer = post(platform.url + "/orders", {"call_id": "c9"}, key="kill-me")
    assert status == 200 and answer["order_no"] == platform.orders["kill-me"]["order_no"]
    assert len(platform.orders) == 1


def test_wait_for_requests_times_out_with_what_arrived(platform: FakePlatform) -> None:
    post(platform.url + "/sms", {"to": "1"}, key="x")
    with pytest.raises(TimeoutError, match=r"got 1: \[\('POST', '/sms'\)\]"):
        platform.wait_for_requests(2, timeout=0.2)


async def test_mutual_tls_requires_a_client_certificate(pki: TestPki, tmp_path: Path) -> None:
    with FakePlatform(ssl_context=pki.server_context(require_client_cert=True)) as platform:
        assert platform.url.startswith("https://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            async with session.post(platform.url + "/orders", json=ORDER, headers={"Idempotency-Key": "t"},
                                    ssl=pki.client_context(with_cert=True)) as r:
                assert r.status == 201 and (await r.json())["order_no"].startswith("GD")
            assert platform.requests[0]["client_cert"] == {"commonName": "fenliu-client"}
            with pytest.raises((aiohttp.ClientError, ssl.SSLError, OSError)):
                async with session.post(platform.url + "/orders", json=ORDER, headers={"Idempotency-Key": "u"},
                                        ssl=pki.client_context(with_cert=False)) as r:
                    await r.read()
        assert len(platform.requests) == 1 and set(platform.orders) == {"t"}
        # and a client that does not trust the CA refuses the server
        with pytest.raises(urllib.error.URLError):
            _opener.open(urllib.request.Request(platform.url + "/orders", data=b"{}", method="POST"), timeout=5)
