"""One network policy for every connection Treecast makes to a name an app handed over:
the webhook transport, git URL vetting and the smart-HTTP ref checks. No network: the
resolvers are stand-ins."""

from __future__ import annotations

import time

import httpcore
import pytest

from models.git import GitErrorType
from treecast import netpolicy
from treecast.gitcache.errors import GitError
from treecast.gitcache.smarthttp import RefClient
from treecast.urls import vet_git_url
from treecast.webhooks.transport import GuardedBackend, shared_ssl_context


def inside(host: str, port: int) -> list[str]:
    return ["93.184.216.34", "10.1.2.3"]  # one public answer, one internal: a rebinding


async def test_every_user_refuses_a_name_with_one_internal_address() -> None:
    with pytest.raises(ValueError, match=r"10\.1\.2\.3") as vetting:
        vet_git_url(
            "https://mixed.example/o/r",
            allow_private=False,
            allow_file=False,
            token=False,
            allow_insecure=False,
            resolve=inside,
        )
    with pytest.raises(httpcore.ConnectError) as transport:
        GuardedBackend(allow_private=False, resolver=inside).connect_tcp("mixed.example", 443)
    client = RefClient(allow_private=False, ssl_context=shared_ssl_context(), resolver=inside)
    with pytest.raises(GitError) as refcheck:
        await client.ls_refs("https://mixed.example/o/r", None, ["HEAD"], 5.0)
    assert refcheck.value.type == GitErrorType.URL_REFUSED and refcheck.value.non_retryable
    rule = netpolicy.private_refusal("it", "10.1.2.3")
    assert (
        str(transport.value)
        == refcheck.value.message
        == f"refusing to connect to mixed.example: {rule}"
    )
    assert str(vetting.value).endswith(rule.removeprefix("it"))


async def test_the_ref_check_gives_up_on_a_hanging_name_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before, the check waited for getaddrinfo as long as it took (its thread stayed
    # blocked even after the check's own timeout), and there was no cap on such lookups.
    monkeypatch.setattr(netpolicy, "DNS_TIMEOUT_SECONDS", 0.2)

    def hangs(host: str, port: int) -> list[str]:
        time.sleep(3)
        return ["127.0.0.1"]

    client = RefClient(allow_private=True, ssl_context=shared_ssl_context(), resolver=hangs)
    started = time.monotonic()
    with pytest.raises(GitError) as failed:
        await client.ls_refs("http://slow.example:9/r.git", None, ["HEAD"], 10.0)
    assert time.monotonic() - started < 1.5
    assert failed.value.type == GitErrorType.NETWORK and not failed.value.non_retryable
    assert "did not resolve within 0.2 s" in failed.value.message
