"""The approval page's session and framing: no frame may show it, the cookie carries no key
material, logout and key revocation end a session server-side, sign-in is throttled."""

from __future__ import annotations

import base64
import hashlib
import json
import zlib

from aurora import keys


def sign_in(client, key: str, addr: str = "10.0.0.1"):
    page = client.get("/ui/login").get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    return client.post("/ui/login", data={"key": key, "csrf_token": csrf}, environ_base={"REMOTE_ADDR": addr})


def cookie_payload(client) -> str:
    """The Flask session cookie's readable part (it is signed, not encrypted)."""
    value = client.get_cookie("session").value
    data = value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    return (zlib.decompress(raw) if value.startswith(".") else raw).decode()


def test_no_page_or_api_answer_can_be_framed(client, api_keys) -> None:
    for path in ("/ui/login", "/health", "/openapi.json", "/workflows"):
        response = client.get(path)
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
        assert response.headers["X-Frame-Options"] == "DENY"
    assert sign_in(client, api_keys.approver).status_code == 302
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["X-Frame-Options"] == "DENY"


def test_root_redirects_to_the_page(client) -> None:
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/")


def test_the_cookie_carries_no_key_material_and_logout_ends_the_session(client, app, api_keys) -> None:
    assert sign_in(client, api_keys.approver).status_code == 302
    payload = cookie_payload(client)
    key_id, secret_hash = api_keys.approver.split("_")[1], hashlib.sha256(api_keys.approver.encode()).hexdigest()
    assert key_id not in payload and secret_hash not in payload and "sid" in json.loads(payload)
    stolen = client.get_cookie("session").value
    page = client.get("/ui/")
    csrf = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    assert client.post("/ui/logout", data={"csrf_token": csrf}).status_code == 302
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    answer = replay.get("/ui/")
    assert answer.status_code == 302 and "/ui/login" in answer.headers["Location"]


def test_revoking_the_key_ends_its_sessions(client, runtime, api_keys) -> None:
    assert sign_in(client, api_keys.approver).status_code == 302
    assert client.get("/ui/").status_code == 200
    keys.revoke(runtime.db, "alice")
    assert client.get("/ui/").status_code == 302


def test_sign_in_is_throttled_per_client_and_per_key(client, app, api_keys) -> None:
    for n in range(10):  # ten guesses at ten key ids from one address
        assert sign_in(client, f"aur_guess{n}_x", addr="10.0.0.9").status_code == 401
    refused = sign_in(client, api_keys.approver, addr="10.0.0.9")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "try again in" in refused.get_data(as_text=True)
    assert sign_in(app.test_client(), api_keys.approver, addr="10.0.0.10").status_code == 302  # another client
    key_id = api_keys.viewer.split("_")[1]
    for n in range(5):  # one key id guessed at from many addresses
        assert sign_in(app.test_client(), f"aur_{key_id}_wrong", addr=f"10.1.0.{n}").status_code == 401
    assert sign_in(app.test_client(), api_keys.viewer, addr="10.2.0.1").status_code == 429
