"""Property-based checks of the parsers and builders hostile input reaches: the `ls-tree -z`
record parser and webhook payloads (signed, verified by `standardwebhooks`).

A few seconds each in `make test`; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs them longer.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from tests.support.fuzzing import budget
from treecast.gitcache.tree import parse_ls_tree_record
from treecast.webhooks import payloads
from treecast.webhooks.payloads import RepositoryRef
from treecast.webhooks.signing import signed_headers

BUDGET = budget(200)
OID = st.text("0123456789abcdef", min_size=40, max_size=40)
RAW_PATH = st.binary(min_size=1, max_size=300).filter(lambda b: b"\0" not in b)
REPO = RepositoryRef("repo_x", "https://example.com/o/r", "o", "r", None)


@BUDGET
@given(
    st.sampled_from(["100644", "100755", "120000", "160000", "040000"]),
    OID,
    st.one_of(st.integers(0, 2**40), st.none()),
    RAW_PATH,
)
def test_ls_tree_records_parse_back(mode: str, oid: str, size: int | None, path: bytes) -> None:
    kind = {"160000": "commit", "040000": "tree"}.get(mode, "blob")
    shown = b"-" if size is None else str(size).encode()
    record = f"{mode} {kind} {oid} ".encode() + shown.rjust(7) + b"\t" + path
    assert parse_ls_tree_record(record) == (mode, oid, size or 0, path)


@BUDGET
@given(st.binary(max_size=400))
def test_any_bytes_parse_or_are_skipped(record: bytes) -> None:
    parsed = parse_ls_tree_record(record)  # never raises
    assert parsed is None or (parsed[3] and parsed[2] >= 0)


@BUDGET
@given(
    path=st.text(min_size=1, max_size=200),
    content=st.text(max_size=500),
    sha=OID,
    event=st.sampled_from(["create", "update"]),
)
def test_payloads_round_trip_and_verify(path: str, content: str, sha: str, event: str) -> None:
    body = payloads.file_body(
        event=event,
        repo=REPO,
        path=path,
        sha=sha,
        size=len(content.encode()),
        content=content,
        base64=False,
        commit_sha=sha,
        timestamp=payloads.iso_utc(),
        previous_sha=sha if event == "update" else None,
    )
    decoded = json.loads(body)
    assert decoded["file"]["path"] == path and decoded["file"]["content"] == content
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = signed_headers([secret], "msg_1", event, body)
    assert Webhook(secret).verify(body, headers) == decoded
    gone = payloads.delete_body(repo=REPO, path=path, sha=sha, commit_sha=None, timestamp="t")
    assert json.loads(gone)["file"] == {"path": path, "sha": sha}
