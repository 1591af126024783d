"""How `starter.py` shows things to a person: ages, plain dicts, the status table."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import Any


def printable(text: str) -> str:
    """Text that came from input, with control characters (newlines, ESC, BEL, DEL and
    the C1 range) escaped, so a name cannot rewrite the terminal or forge lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def iso(value: Any) -> Any:
    """Datetimes as ISO-8601 text; anything else unchanged."""
    return value.isoformat() if isinstance(value, datetime) else value


def age(value: str | None) -> str:
    """An ISO time as "12s ago" / "in 3m"; "never" for none."""
    if not value:
        return "never"
    try:
        then = datetime.fromisoformat(value)
    except ValueError:
        return value
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = int((datetime.now(UTC) - then).total_seconds())
    if seconds < 0:
        return f"in {-seconds}s"
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def plain(status: Any) -> dict[str, Any] | None:
    """A dataclass (a workflow's status or outcome) as a JSON-ready dict."""
    if status is None:
        return None
    raw = asdict(status) if is_dataclass(status) and not isinstance(status, type) else dict(status)
    return {k: iso(v) for k, v in raw.items()}


def table(headers: list[str], rows: list[list[str]], indent: str = "") -> list[str]:
    """Left-aligned columns, as wide as their widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return [
        indent
        + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    ]


def credential_line(info: dict[str, Any]) -> str:
    """A watch's credential kind and its public parts (never a secret)."""
    kind = info.get("kind", "none")
    if kind == "ssh-key":
        pinned = ", ".join(info.get("host_key_fingerprints") or []) or "none"
        return f"ssh-key {info.get('ssh_key_fingerprint')} (host keys {pinned})"
    if kind == "github-app":
        expires = info.get("token_expires_at")
        token = f"token expires {age(expires)}" if expires else "no token minted yet"
        return (
            f"github-app {info.get('github_app_id')} installation "
            f"{info.get('github_installation_id')} ({token})"
        )
    return str(kind)


def status_table(rows: list[dict[str, Any]], unknown: Collection[str] = ()) -> str:
    """One line per repository, and under it one line per watching app.

    `unknown`: ids of repositories whose state Temporal did not tell (it could not be
    reached, or no worker answered); without a status they show as stopped.
    """
    lines: list[str] = []
    for row in rows:
        sync = row["sync"]
        if sync is None:
            unseen = row["repository_id"] in unknown
            state = ["unknown" if unseen else "stopped", "-", "-", "-", "-"]
        else:
            breaker = sync["breaker_state"]
            if breaker == "open" and sync.get("cooldown_until"):
                breaker += f" until {age(sync['cooldown_until'])}".replace("until in ", "for ")
            state = [
                breaker,
                str(sync["consecutive_failures"]),
                (sync.get("last_commit") or "-")[:12],
                # With remote checks the remote was confirmed at the later of the two.
                age(
                    max(
                        filter(None, [sync.get("last_sync_at"), sync.get("checked_at")]),
                        default=None,
                    )
                ),
                age(sync.get("next_sync_at"))
                if not sync.get("full_sync_interval_seconds") or sync.get("last_error_type")
                else f"check every {sync['poll_interval_seconds']} s",
            ]
        ref = f" ({row['ref']})" if row["ref"] else ""
        lines += table(
            ["REPOSITORY", "BREAKER", "FAILURES", "COMMIT", "LAST SYNC", "NEXT SYNC", "URL"],
            [[row["repository_id"], *state, row["url"] + ref]],
        )
        if sync is not None and sync.get("last_error_type"):
            lines.append(
                printable(
                    f"  last error: {sync['last_error_type']}: {sync.get('last_error') or ''}"
                )[:200]
            )
        credentials = row.get("credentials") or {}
        if credentials.get("kind", "none") != "none":
            whose = f" ({row['fetched_with']}'s)" if row.get("fetched_with") else ""
            lines.append(f"  fetched with: {credential_line(credentials)}{whose}")
        if row.get("skipped_unsafe_paths"):
            lines.append(
                f"  skipped {row['skipped_unsafe_paths']} unsafe paths (never delivered; "
                "see the worker's log)"
            )
        apps = [
            [
                app["app_id"],
                printable(app["app_name"])[:24],
                app["status"],
                f"{app.get('access') or 'granted'} "
                f"({(app.get('credentials') or {}).get('kind', 'none')})",
                (app["delivered_commit"] or "-")[:12],
                age(app["last_synced_at"]),
                printable(f"{app['last_error_type']}: {app['last_error']}")[:80]
                if app["last_error"]
                else "",
            ]
            for app in row["apps"]
        ]
        if apps:
            lines += table(
                ["APP", "NAME", "STATUS", "ACCESS", "AT", "DELIVERED", "ERROR"], apps, indent="  "
            )
        else:
            lines.append("  no app watches it yet")
        for app in row["apps"]:
            options = [
                f"submodules {app['submodules']}" if app.get("submodules", "off") != "off" else "",
                "lfs" if app.get("lfs") else "",
            ]
            if any(options):
                lines.append(f"  {app['app_id']}: {', '.join(o for o in options if o)}")
            held = app.get("held_back") or []
            for reason in held[:5]:
                lines.append(printable(f"  {app['app_id']} held back: {reason}")[:200])
            if len(held) > 5:
                lines.append(f"  {app['app_id']}: {len(held) - 5} more held back (see --json)")
        lines.append("")
    return "\n".join(lines).rstrip()
