"""Connecting to Temporal: one place for the worker and the service layer."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from treecast.config import Settings


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client for the configured Temporal address and namespace.

    Profiles and `TEMPORAL_*` variables (API key, TLS) apply as for any Temporal
    tool; the address and namespace come from Settings, which read the same
    variables, so both agree.
    """
    config = ClientConfig.load_client_connect_config()
    config["target_host"] = settings.temporal_address
    config["namespace"] = settings.temporal_namespace
    return await Client.connect(**config, runtime=runtime)
