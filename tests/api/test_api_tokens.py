"""App tokens and limits without I/O: format, parsing, hashing, buckets."""

from __future__ import annotations

from treecast.api.limits import TokenBuckets
from treecast.service import tokens


def test_tokens_parse_and_match_only_their_own_hash() -> None:
    made = tokens.new_token()
    assert made.token.startswith(f"tc_{made.token_id}_")
    parsed = tokens.parse(made.token)
    assert parsed is not None and parsed[0] == made.token_id
    assert tokens.matches(parsed[1], made.token_hash)
    assert not tokens.matches(parsed[1], tokens.new_token().token_hash)
    assert not tokens.matches(parsed[1], None)
    assert made.token_hash != parsed[1] and len(made.token_hash) == 64
    for bad in ("", "tc_", "tc_zz_" + "a" * 43, made.token + "x", " " + made.token, "docora_ab"):
        assert tokens.parse(bad) is None


def test_admin_token_comparison() -> None:
    assert tokens.same_secret("a" * 32, "a" * 32)
    assert not tokens.same_secret("a" * 31, "a" * 32)
    assert not tokens.same_secret("", "a" * 32)


def test_token_buckets_refill_at_the_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == 0.5  # one token comes back in half a second
    assert buckets.take("other") == 0.0  # keys are independent
    now[0] = 0.5
    assert buckets.take("k") == 0.0
    assert buckets.take("k") > 0
