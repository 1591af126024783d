"""Webhook bodies: Docora's field names and order, text vs base64, chunk plans."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from models.delivery import BreakerInfo
from treecast.webhooks import payloads
from treecast.webhooks.payloads import ContentProbe, RepositoryRef, is_text, plan_chunks

REPO = RepositoryRef("repo_1", "https://example.com/acme/docs", "acme", "docs", "main")
TS = "2026-01-02T03:04:05.678Z"


def test_iso_utc_has_milliseconds_and_z() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert payloads.iso_utc(moment) == TS
    assert payloads.iso_utc(moment.replace(tzinfo=None)) == TS


def test_create_body_is_compact_in_docora_order() -> None:
    body = payloads.file_body(
        event="create",
        repo=REPO,
        path="guide/intro.md",
        sha="ab" * 32,
        size=9,
        content="Héllo \u2028",
        base64=False,
        commit_sha="c" * 40,
        timestamp=TS,
    )
    text = body.decode()
    assert text.startswith('{"repository":{"repository_id":"repo_1","url":')
    assert " " not in text.replace("Héllo \u2028", "")  # compact
    assert "\u2028" in text and "\\u" not in text  # raw UTF-8, not escaped
    parsed = json.loads(body)
    assert list(parsed) == ["repository", "file", "commit_sha", "timestamp"]
    assert list(parsed["file"]) == ["path", "sha", "size", "content"]
    assert list(parsed["repository"]) == ["repository_id", "url", "owner", "name", "ref"]


def test_update_binary_chunk_body() -> None:
    body = payloads.file_body(
        event="update",
        repo=REPO,
        path="a.bin",
        sha="s",
        size=4,
        content="AAEC",
        base64=True,
        commit_sha="c",
        timestamp=TS,
        previous_sha="p",
        chunk=("id", 1, 3),
    )
    parsed = json.loads(body)
    assert list(parsed) == ["repository", "file", "previous_sha", "commit_sha", "timestamp"]
    assert parsed["previous_sha"] == "p"
    assert parsed["file"]["content_encoding"] == "base64"
    assert parsed["file"]["chunk"] == {"id": "id", "index": 1, "total": 3}


def test_delete_body_has_path_and_sha_only() -> None:
    parsed = json.loads(
        payloads.delete_body(repo=REPO, path="old.md", sha="s1", commit_sha="c", timestamp=TS)
    )
    assert parsed["file"] == {"path": "old.md", "sha": "s1"}
    assert list(parsed) == ["repository", "file", "commit_sha", "timestamp"]


def test_notice_bodies() -> None:
    breaker = BreakerInfo(
        status="open",
        consecutive_failures=5,
        threshold=5,
        cooldown_until=TS,
        opened_at=TS,
        failed_syncs=2,
    )
    failed = json.loads(
        payloads.sync_failed_body(
            repo=REPO,
            error_type="GitNetworkError",
            error_message="boom",
            breaker=breaker,
            timestamp=TS,
        )
    )
    assert list(failed) == ["event", "repository", "error", "circuit_breaker", "timestamp"]
    assert failed["error"] == {"type": "GitNetworkError", "message": "boom"}
    assert failed["circuit_breaker"] == {
        "status": "open",
        "consecutive_failures": 5,
        "threshold": 5,
        "cooldown_until": TS,
    }
    recovered = json.loads(
        payloads.sync_recovered_body(repo=REPO, commit_sha="c", breaker=breaker, timestamp=TS)
    )
    assert recovered["event"] == "sync_recovered"
    assert recovered["circuit_breaker"] == {"status": "closed", "opened_at": TS, "failed_syncs": 2}


def test_text_detection() -> None:
    assert is_text(b"") and is_text("héllo\n".encode())
    assert not is_text(b"a\0b")
    assert not is_text(b"\xff\xfe")  # not UTF-8
    assert not is_text("é".encode()[:1])  # truncated sequence


def test_probe_streams_like_the_whole_check() -> None:
    data = "日本語のテキスト".encode() * 1000
    probe = ContentProbe()
    for i in range(0, len(data), 7):  # splits multi-byte sequences across pieces
        probe.update(data[i : i + 7])
    assert probe.finish_is_text() and probe.size == len(data)
    import hashlib

    assert probe.sha256 == hashlib.sha256(data).hexdigest()
    broken = ContentProbe()
    broken.update(data + "é".encode()[:1])
    assert not broken.finish_is_text()


def test_chunk_plans() -> None:
    mib = 1 << 20
    assert plan_chunks(mib, True, mib, 512 * 1024) == payloads.ChunkPlan(False, False, 1, 393216)
    # binary: the base64 size counts (786,432 raw bytes encode to exactly 1 MiB)
    assert not plan_chunks(786432, False, mib, 512 * 1024).chunked
    big = plan_chunks(786433, False, mib, 512 * 1024)
    assert big.chunked and big.base64 and big.total == 3
    # text above the threshold is chunked as base64
    text = plan_chunks(mib + 1, True, mib, 512 * 1024)
    assert text.chunked and text.base64 and text.total == 3
    # 3 MiB binary -> 8 chunks, as in Docora
    assert plan_chunks(3 * mib, False, mib, 512 * 1024).total == 8
    # each chunk is whole base64 quanta: it decodes on its own
    raw = bytes(range(256)) * 5000
    step = big.raw_chunk_bytes
    pieces = [base64.b64encode(raw[i : i + step]) for i in range(0, len(raw), step)]
    assert b"".join(base64.b64decode(p) for p in pieces) == raw
    assert all(len(p) == 512 * 1024 for p in pieces[:-1])
