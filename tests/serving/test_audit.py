"""The audit trail over HTTP (portrait.audit, serving.auditing) on the session's in-process service.

Allowed and refused calls are recorded with time, keyed caller fingerprint, client, request id, action and
outcome; the request id comes back in ``X-Request-ID``; an audit log that cannot be written refuses
privileged calls with a 503 naming it, and readiness says why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import stat
from datetime import datetime
from pathlib import Path

import pytest

from portrait import audit

SEED = {"seed_ids": [f"C{i:07d}" for i in range(1, 150)], "size": 20}
KEYS = {"ad-key": ["lookalike:create"], "tag-key": ["tags:read"], "aud-key": ["audiences:read"]}


def _records(settings, before: int) -> list[dict]:
    return audit.read(settings.audit_log)[before:]


def test_allowed_and_denied_calls_are_recorded_with_every_field(client, live, monkeypatch):
    monkeypatch.setattr(live.settings, "api_keys", KEYS)
    settings = live.settings
    before = len(audit.read(settings.audit_log))

    ok = client.post("/v1/lookalike", json=SEED, headers={"X-API-Key": "ad-key", "X-Request-ID": "req-42.a"})
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-request-id"] == "req-42.a"
    scope = client.post("/v1/lookalike", json=SEED, headers={"Authorization": "Bearer tag-key"})
    assert scope.status_code == 403
    unknown = client.get("/v1/audiences", headers={"X-API-Key": "guess", "X-Request-ID": "x" * 300})
    assert unknown.status_code == 401  # a FastAPI route: refused by its dependency
    generated = unknown.headers["x-request-id"]
    assert generated != "x" * 300 and len(generated) == 32  # an insane id is replaced
    missing = client.post("/v1/tags", json={"customer_ids": ["C0000001"]})
    assert missing.status_code == 401

    records = _records(settings, before)
    assert [(r["action"], r["outcome"], r.get("status")) for r in records] == [
        ("POST /v1/lookalike", "allowed", None),
        ("POST /v1/lookalike", "denied 403", 403),
        ("GET /v1/audiences", "denied 401", 401),
        ("POST /v1/tags", "denied 401", 401),
    ]
    for r in records:
        assert {"at", "caller", "client", "request_id", "action", "outcome"} <= set(r), r
        datetime.fromisoformat(r["at"])
        assert r["client"] and r["client"] != "unknown"
    allowed, refused, guessed, anonymous = records
    assert allowed["request_id"] == "req-42.a" and guessed["request_id"] == generated
    assert scope.headers["x-request-id"] == refused["request_id"]
    assert allowed["operation"] == "lookalike" and allowed["audience_size"] == 20  # the existing details
    assert refused["scope"] == "lookalike:create" and anonymous["caller"] == "anonymous"

    # The fingerprint is an HMAC with the workspace's secret, not a plain hash of the key.
    secret_file = settings.audit_secret_file
    key_secret = secret_file.read_bytes().strip()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600 and len(key_secret) == 64
    expected = "key:" + hmac.new(key_secret, b"ad-key", hashlib.sha256).hexdigest()[:16]
    assert allowed["caller"] == expected
    assert hashlib.sha256(b"ad-key").hexdigest()[:16] not in allowed["caller"]
    assert refused["caller"] == "key:" + hmac.new(key_secret, b"tag-key", hashlib.sha256).hexdigest()[:16]
    assert audit.fingerprint("ad-key", b"another secret") != expected
    text = json.dumps(records)
    assert not any(k in text for k in (*KEYS, "guess", key_secret.decode()))  # no key, no secret


def test_an_unwritable_audit_log_refuses_privileged_calls_with_503_and_readiness_says_why(
    client, live, monkeypatch
):
    monkeypatch.setattr(audit, "RETRY_AFTER_S", 0.0)  # no memory of failures: each call probes afresh
    folder = live.settings.audit_log.parent
    aside = folder.with_name("audit.aside")
    os.replace(folder, aside)
    try:
        if os.geteuid() == 0:  # root writes through a read-only mode: put a file where the folder was
            folder.write_text("not a folder")
        else:
            folder.mkdir()
            folder.chmod(0o500)
        refused = client.post("/v1/lookalike", json=SEED)
        assert refused.status_code == 503, refused.text
        body = refused.json()
        assert body["error"] == "audit log unavailable" and str(folder) in body["reasons"][0]
        assert refused.headers["x-request-id"]
        health = client.get("/v1/health").json()
        assert health["ready"] is False
        assert any(r.startswith("audit log unavailable") and str(folder) in r for r in health["reasons"])
        readyz = client.get("/readyz")
        assert readyz.status_code == 503 and "audit log unavailable" in readyz.text
        # with keys: a refusal stays a refusal (its record is lost, and logged); an allowed key gets the 503
        monkeypatch.setattr(live.settings, "api_keys", KEYS)
        assert client.post("/v1/lookalike", json=SEED).status_code == 401
        assert client.post("/v1/lookalike", json=SEED, headers={"X-API-Key": "tag-key"}).status_code == 403
        assert client.post("/v1/lookalike", json=SEED, headers={"X-API-Key": "ad-key"}).status_code == 503
    finally:
        if folder.is_dir():
            folder.chmod(0o700)
            shutil.rmtree(folder)
        else:
            folder.unlink()
        os.replace(aside, folder)
    monkeypatch.setattr(live.settings, "api_keys", {})
    assert client.post("/v1/lookalike", json=SEED).status_code == 200
    assert client.get("/v1/health").json()["ready"] is True


def test_a_full_disk_fails_the_privileged_call_with_503_not_an_unaudited_answer(
    client, live, served, monkeypatch
):
    """The audit file on a device that is always full (``/dev/full``): opening works, the write fails, so the
    endpoint's own record fails after the work; the caller gets the 503, never the audience."""
    if not Path("/dev/full").exists():
        pytest.fail("/dev/full is needed to provoke ENOSPC without filling a disk")
    log = live.settings.audit_log
    aside = log.with_name("audit.jsonl.aside")
    if log.exists():
        os.replace(log, aside)
    log.symlink_to("/dev/full")
    try:
        full = client.post("/v1/lookalike", json=SEED)
        assert full.status_code == 503, full.text
        assert full.json()["error"] == "audit log unavailable"
        assert "No space left on device" in full.json()["reasons"][0]
        created = client.post("/v1/audiences", json={"customer_ids": ["C0000001", "C0000002"]})
        assert created.status_code == 503 and "audit log unavailable" in created.text
        health = client.get("/v1/health").json()  # the failure is remembered for RETRY_AFTER_S
        assert any("No space left on device" in r for r in health["reasons"]), health
    finally:
        log.unlink()
        if aside.exists():
            os.replace(aside, log)
    monkeypatch.setattr(audit, "RETRY_AFTER_S", 0.0)
    assert client.post("/v1/lookalike", json=SEED).status_code == 200
