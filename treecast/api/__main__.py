"""`python -m treecast.api`: serve the HTTP API with uvicorn on TREECAST_API_LISTEN."""

from __future__ import annotations

import logging
import sys

from treecast.config import ConfigError, Settings, load_settings


def serve(settings: Settings, listen: str | None = None) -> int:
    """Run the server until interrupted; returns the exit status."""
    try:
        import uvicorn
        import uvicorn.config
        from sqlalchemy.exc import DBAPIError

        from treecast import logs
        from treecast.api.app import create_app
        from treecast.service.core import TreecastService, run
        from treecast.service.errors import SchemaBehind
    except ImportError as error:
        print(
            f"error: the HTTP API needs fastapi and uvicorn in this Python ({error.name} is "
            "missing); install them into .venv",
            file=sys.stderr,
        )
        return 2

    address = listen or settings.api_listen
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        print(f"error: --listen {address!r} is not host:port", file=sys.stderr)
        return 2
    logs.configure(settings.log_format)
    log = logging.getLogger("treecast.api")
    service = TreecastService(settings)
    try:
        run(service.admin.prepare_database())
    except SchemaBehind as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except DBAPIError as error:  # down for now: /ready says so until it answers
        log.warning(
            "the database is not reachable yet (%s); its schema is checked when it is",
            type(error).__name__,
        )
    if settings.log_format == "json":  # every line an object
        log.info("Treecast API on http://%s (OpenAPI at /docs)", address)
    else:
        print(f"Treecast API on http://{address} (OpenAPI at /docs)", flush=True)
    uvicorn.run(
        create_app(settings, service),
        host=host.strip("[]"),
        port=int(port),
        log_level="info",
        # JSON: uvicorn's loggers hand their records to ours instead of printing text.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        # On SIGTERM: accept no new connections, let requests in flight finish (up to
        # this long), then stop. The body limit is ours (413 before reading past it).
        timeout_graceful_shutdown=10,
    )
    return 0


def main() -> int:
    """Entry point: settings from the environment, then `serve`."""
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
