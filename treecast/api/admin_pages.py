"""The admin web page: server-rendered pages under /admin (Jinja2, autoescaped), behind a
login with TREECAST_ADMIN_TOKEN. Every page reads through `TreecastService`; every action
is a POST form carrying the session's CSRF token and answers 303 back to its page with a
flash message. See docs/admin.md."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from treecast.service.admin import BulkAction, PageSession, bulk_workflow_id
from treecast.service.apps import AppOrder
from treecast.service.core import TreecastService
from treecast.service.errors import NotConfigured, Unauthorized, Unreachable, UserError
from treecast.service.results import LiveState, Reconciled

COOKIE = "treecast_admin"
LOGIN_COOKIE = "treecast_admin_login"  # the login form's own CSRF token (double submit)
HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
APPS_PER_PAGE = 25
DELIVERIES_PER_PAGE = 50
MAX_FORM_FIELD = 4096
T = TypeVar("T")

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


class _Refused(Exception):
    """A request turned away before its page or action ran (`_viewer`: to the login page;
    `_action`: a refused form); `response` is the answer."""

    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


class _SavesSession(APIRoute):
    """Answers a request turned away with its refusal, and saves the request's session (its
    flashes, what it shows once) before the answer leaves: the next page may be served by
    another API process."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_and_save(request: Request) -> Response:
            try:
                response = await handle(request)
            except _Refused as refused:
                response = refused.response
            session: PageSession | None = getattr(request.state, "admin_session", None)
            if session is not None and session.changed:
                await _service(request).admin.save_session(session)
            return response

        return handle_and_save


router = APIRouter(prefix="/admin", include_in_schema=False, route_class=_SavesSession)

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


# -- plumbing ---------------------------------------------------------------------------------


def _service(request: Request) -> TreecastService:
    service: TreecastService = request.app.state.service
    return service


async def _session(request: Request) -> PageSession | None:
    """The request's admin session (from the database), or None."""
    if not _service(request).settings.admin_token:
        return None
    session = await _service(request).admin.session(request.cookies.get(COOKIE))
    request.state.admin_session = session
    return session


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


async def _viewer(request: Request) -> PageSession:
    """The session of a page's viewer; one without is sent to the login page."""
    session = await _session(request)
    if session is None:
        raise _Refused(_to_login(request))
    return session


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(
        "/admin/login?" + urlencode({"next": target}), 303, headers=SECURITY_HEADERS
    )


def _back(location: str) -> RedirectResponse:
    return RedirectResponse(location, 303, headers=SECURITY_HEADERS)


def _refused(message: str, status: int = 403) -> HTMLResponse:
    body = templates.get_template("refused.html").render(message=message, status=status)
    return _html(body, status)


def render(
    request: Request,
    session: PageSession | None,
    name: str,
    fields: tuple[str, ...] = (),
    **context: Any,
) -> str:
    """A page, with the session's flashes and what it shows once taken: a flash about one
    of the page's form `fields` beside that field (`field_errors`), the others on top."""
    settings = _service(request).settings
    flashes = session.take_flashes() if session else []
    return templates.get_template(name).render(
        session=session,
        csrf=session.csrf if session else "",
        flashes=[(kind, text) for kind, text, field in flashes if field not in fields],
        field_errors={field: text for _, text, field in flashes if field and field in fields},
        reveal=session.take_reveal() if session else None,
        path=request.url.path,
        ui_url=settings.temporal_ui_url,
        namespace=settings.temporal_namespace,
        quote=quote,
        **context,
    )


async def _form(request: Request, whole: tuple[str, ...] = ()) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (the limits middleware caps its size);
    each field cut at MAX_FORM_FIELD characters but those in `whole` (a pasted list)."""
    raw = (await request.body()).decode("utf-8", errors="replace")
    fields = parse_qs(raw, keep_blank_values=True, max_num_fields=50)
    return {
        key: values[0] if key in whole else values[0][:MAX_FORM_FIELD]
        for key, values in fields.items()
        if values
    }


async def _action(
    request: Request, whole: tuple[str, ...] = ()
) -> tuple[PageSession, dict[str, str]]:
    """The session and form of a POST (`whole`: its fields kept uncut); refused (403)
    without a session or when the form lacks this session's CSRF token."""
    session = await _session(request)
    if session is None:
        raise _Refused(
            _refused("You are not logged in to the admin page (or your session expired).")
        )
    form = await _form(request, whole)
    if not session.csrf_ok(form.get("csrf")):
        raise _Refused(
            _refused("The form is missing its security token or it is stale; reload the page.")
        )
    return session, form


def _scheme(form: dict[str, str]) -> str | None:
    """The signing scheme a form chose (None: the default); the service checks it."""
    return form.get("scheme", "").strip() or None


# How this page names the inputs of its forms, beside which a service error shows.
LABELS = {
    "name": "Name",
    "base_url": "Base URL",
    "secret": "Webhook secret",
    "scheme": "Signing scheme",
    "client_auth_key": "Client auth key",
}
APP_FORM = ("name", "base_url", "secret", "scheme", "client_auth_key")


def _missing(request: Request, session: PageSession, message: str) -> _Refused:
    """A page whose subject does not exist: the "missing" page, 404."""
    return _Refused(_html(render(request, session, "missing.html", message=message), 404))


async def _found(request: Request, session: PageSession, lookup: Awaitable[T]) -> T:
    """What a page shows; a lookup that finds nothing answers the "missing" page."""
    try:
        return await lookup
    except UserError as error:
        raise _missing(request, session, _problem(error)) from None


def _problem(error: Exception) -> str:
    if isinstance(error, Unreachable):
        return f"Temporal could not be asked: {error}"
    if isinstance(error, UserError):
        return error.worded(LABELS)
    return str(error)


def _refusal(session: PageSession, error: Exception, what: str = "") -> None:
    """Flash an error: beside its form field when it names one (with `what` on top), or
    on top."""
    field = error.field if isinstance(error, UserError) and error.field in LABELS else None
    if field is None:
        session.flash(f"{what}: {_problem(error)}" if what else _problem(error), "error")
        return
    if what:
        session.flash(f"{what}.", "error")
    session.flash(_problem(error), "error", field)


LIVE_FAILED = (UserError, Unreachable, NotConfigured)


def _live_note(states: list[LiveState]) -> str | None:
    """Why some workflows' state is unknown (the first reason), or None."""
    for state in states:
        if not state.known:
            return state.error or "Temporal did not tell"
    return None


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def workflow_link(request: Request, workflow_id: str) -> str:
    """A workflow's page in the Temporal Web UI."""
    settings = _service(request).settings
    namespace = quote(settings.temporal_namespace, safe="")
    workflow = quote(workflow_id, safe="")
    return f"{settings.temporal_ui_url}/namespaces/{namespace}/workflows/{workflow}"


def ui_link(request: Request, repository_id: str) -> str:
    return workflow_link(request, f"sync-repository/{repository_id}")


# -- static files and login -------------------------------------------------------------------


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The page's stylesheet and its one small script."""
    files = {"admin.css": "text/css", "admin.js": "text/javascript"}
    if name not in files:
        return Response(status_code=404)
    return FileResponse(
        STATIC / name, media_type=files[name], headers={"Cache-Control": "no-cache"}
    )


@router.get("/login")
async def login_page(request: Request, next: str = "/admin") -> Response:
    if not _service(request).settings.admin_token:
        body = render(request, None, "login.html", off=True, login_csrf="", next="/admin")
        return _html(body, 503)
    if await _session(request) is not None:
        return _back(_safe_next(next))
    login_csrf = request.cookies.get(LOGIN_COOKIE) or _new_login_token()
    body = render(request, None, "login.html", login_csrf=login_csrf, next=_safe_next(next))
    response = _html(body)
    _set_login_cookie(request, response, login_csrf)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    service = _service(request)
    form = await _form(request)
    next_page = _safe_next(form.get("next", "/admin"))
    if not service.settings.admin_token:
        return _refused("The admin page is off: set TREECAST_ADMIN_TOKEN on the API server.", 503)
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    given = form.get("login_csrf", "")
    if not expected or not _same(expected, given):
        return _refused("The login form is stale; reload the login page and try again.")
    try:
        # A fresh session id at each login (the one the browser held ends).
        session = await service.admin.log_in(form.get("token"), request.cookies.get(COOKIE))
    except Unauthorized:
        login_csrf = _new_login_token()
        body = render(
            request,
            None,
            "login.html",
            login_csrf=login_csrf,
            next=next_page,
            error="That is not the admin token.",
        )
        refused = _html(body, 401)
        _set_login_cookie(request, refused, login_csrf)
        return refused
    response = _back(next_page)
    response.set_cookie(
        COOKIE,
        session.id,
        max_age=int(service.settings.admin_session_seconds),
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/admin/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session, _ = await _action(request)
    await _service(request).admin.log_out(session.id)
    session.changed = False
    response = _back("/admin/login")
    response.delete_cookie(COOKIE, path="/admin")
    return response


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def _new_login_token() -> str:
    import secrets

    return secrets.token_urlsafe(24)


def _set_login_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        value,
        max_age=3600,
        path="/admin/login",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def _safe_next(target: str) -> str:
    """Only a page of the admin site (no other host, no scheme)."""
    if target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return "/admin"


# -- overview ---------------------------------------------------------------------------------


@router.get("")
@router.get("/")
async def overview(request: Request) -> Response:
    session = await _viewer(request)
    service = _service(request)
    report = await service.admin.overview()
    counts = report
    failed_watches = counts.watches_by_status.get("failed", 0)
    attention: list[tuple[str, str, str]] = []  # (text, link, link text)
    if report.unknown:
        attention.append(
            (
                f"{_count(len(report.unknown), 'repository', 'repositories')}: "
                "their workflows did not answer: "
                f"{_live_note(list(report.live.values()))}. Is a worker running?",
                "/admin/repositories",
                "Repositories",
            )
        )
    if report.open_breakers:
        attention.append(
            (
                f"{_count(len(report.open_breakers), 'repository', 'repositories')} with an "
                "open breaker (git keeps failing), holding back "
                f"{_count(report.watches_behind_open_breakers, 'watch', 'watches')}.",
                "/admin/failed",
                "Failed watches",
            )
        )
    if failed_watches:
        attention.append(
            (
                f"{_count(failed_watches, 'watch', 'watches')} failed to deliver.",
                "/admin/failed",
                "Failed watches",
            )
        )
    if counts.watches_by_status.get("disabled"):
        attention.append(
            (
                f"{_count(counts.watches_by_status['disabled'], 'watch', 'watches')} disabled "
                "(the app answered 410 Gone).",
                "/admin/apps",
                "Apps",
            )
        )
    if counts.failed_deliveries_last_hour:
        attention.append(
            (
                f"{_count(counts.failed_deliveries_last_hour, 'delivery attempt', 'delivery attempts')}"
                " failed in the last hour.",
                "/admin/deliveries?outcome=failed",
                "Failed deliveries",
            )
        )
    body = render(
        request,
        session,
        "overview.html",
        counts=counts,
        open_breakers=report.open_breakers,
        unknown=report.unknown,
        attention=attention,
        held=report.watches_behind_open_breakers,
        title="Overview",
    )
    return _html(body)


# -- apps -------------------------------------------------------------------------------------


@router.get("/apps")
async def apps(request: Request, q: str = "", page: int = 1) -> Response:
    session = await _viewer(request)
    page = max(1, min(page, 1_000_000))
    try:
        found = await _service(request).apps.list(
            search=q[:200],
            order=AppOrder.NAME,
            offset=(page - 1) * APPS_PER_PAGE,
            limit=APPS_PER_PAGE,
            with_total=True,
        )
        rows, total = found.items, found.total or 0
    except UserError as error:
        _refusal(session, error)
        rows, total = [], 0
    pages = max(1, math.ceil(total / APPS_PER_PAGE))
    body = render(
        request,
        session,
        "apps.html",
        fields=APP_FORM,
        rows=rows,
        total=total,
        q=q,
        page=page,
        pages=pages,
        title="Apps",
    )
    return _html(body)


@router.post("/apps")
async def onboard(request: Request) -> Response:
    session, form = await _action(request)
    try:
        app = await _service(request).apps.add(
            form.get("name", "").strip(),
            form.get("base_url", "").strip(),
            form.get("secret", "").strip() or None,
            scheme=_scheme(form),
            client_auth_key=form.get("client_auth_key") or None,
        )
    except UserError as error:
        _refusal(session, error, "The app was not added")
        return _back("/admin/apps")
    session.flash(f"App {app.name} added.")
    session.show_once(
        "Copy these now: they are shown only once.",
        [("API token", app.token), ("Webhook secret", app.secret)],
    )
    return _back(f"/admin/apps/{quote(app.app_id)}")


@router.get("/apps/{app_id}")
async def app_page(request: Request, app_id: str) -> Response:
    session = await _viewer(request)
    service = _service(request)
    detail = await _found(request, session, service.apps.get(app_id))
    page = await _found(request, session, service.deliveries.log(app_id=app_id, limit=20))
    body = render(
        request,
        session,
        "app.html",
        fields=("base_url", "scheme", "client_auth_key"),
        app=detail,
        deliveries=page.items,
        title=f"App {detail.name}",
    )
    return _html(body)


@router.get("/apps/{app_id}/delete")
async def app_delete_page(request: Request, app_id: str) -> Response:
    session = await _viewer(request)
    detail = await _found(request, session, _service(request).apps.get(app_id, with_watches=False))
    body = render(request, session, "app_delete.html", app=detail, title=f"Delete {detail.name}")
    return _html(body)


async def _app_action(request: Request, app_id: str, what: str) -> Response:
    session, form = await _action(request)
    service = _service(request)
    here = f"/admin/apps/{quote(app_id)}"
    try:
        if what == "delete":
            if form.get("confirm") != "yes":
                session.flash("Deleting needs the confirmation page's button.", "error")
                return _back(here + "/delete")
            name = (await service.apps.get(app_id, with_watches=False)).name
            repositories = await service.apps.remove(app_id)
            session.flash(
                f"App {name} deleted, with its {len(repositories)} watches, ledgers and log."
            )
            return _back("/admin/apps")
        if what == "rotate-secret":
            secret = await service.apps.rotate_secret(app_id)
            session.flash(
                "A new secret signs beside the old one; finish the rotation once the app "
                "verifies with it."
            )
            session.show_once("Copy it now: it is shown only once.", [("New secret", secret or "")])
        elif what == "finish-rotation":
            await service.apps.rotate_secret(app_id, finish=True)
            session.flash("Rotation finished: only the newest secret signs now.")
        elif what == "rotate-token":
            token = await service.apps.rotate_token(app_id)
            session.flash("A new API token; the old one stopped working.")
            session.show_once("Copy it now: it is shown only once.", [("API token", token)])
        elif what == "scheme":
            detail = await service.apps.update(
                app_id, scheme=_scheme(form), client_auth_key=form.get("client_auth_key") or None
            )
            session.flash(f"Webhooks are now signed with {detail.scheme}.")
        elif what == "base-url":
            await service.apps.update(app_id, base_url=form.get("base_url", "").strip())
            session.flash("Base URL changed.")
    except UserError as error:
        _refusal(session, error)
    return _back(here)


def _app_route(what: str) -> Callable[[Request, str], Coroutine[Any, Any, Response]]:
    async def route(request: Request, app_id: str) -> Response:
        return await _app_action(request, app_id, what)

    return route


for _path, _what in (
    ("delete", "delete"),
    ("secret/rotate", "rotate-secret"),
    ("secret/finish", "finish-rotation"),
    ("token/rotate", "rotate-token"),
    ("scheme", "scheme"),
    ("base-url", "base-url"),
):
    router.add_api_route(f"/apps/{{app_id}}/{_path}", _app_route(_what), methods=["POST"])


# -- verifying an app's mirror ---------------------------------------------------------------


def _mirror_page(app_id: str, repository_id: str) -> str:
    return f"/admin/apps/{quote(app_id)}/mirror/{quote(repository_id)}"


@router.get("/apps/{app_id}/mirror/{repository_id}")
async def mirror_page(request: Request, app_id: str, repository_id: str) -> Response:
    """Verify or repair what an app holds of a repository (docs/admin.md)."""
    session = await _viewer(request)
    detail = await _found(request, session, _service(request).apps.get(app_id))
    watch = next((w for w in detail.watches if w.repository_id == repository_id), None)
    if watch is None:
        raise _missing(request, session, f"app {app_id} does not watch repository {repository_id}")
    body = render(
        request,
        session,
        "mirror.html",
        app=detail,
        watch=watch,
        action=_mirror_page(app_id, repository_id),
        title=f"Verify the mirror of {watch.url} at {detail.name}",
    )
    return _html(body)


@router.post("/apps/{app_id}/mirror/{repository_id}")
async def mirror_action(request: Request, app_id: str, repository_id: str) -> Response:
    """Verify (send nothing) or Repair (send exactly the difference) what was pasted: the
    app's files as JSON Lines, in any order, or only its tree digest."""
    session, form = await _action(request, whole=("held",))
    held = form.get("held", "").strip()
    mirrors = _service(request).mirrors
    try:
        if not held:
            raise UserError("paste what the app holds (JSON Lines) or its tree digest first")
        if "\n" not in held and "{" not in held:
            done = await mirrors.reconcile(app_id, repository_id, digest=held.lower())
        else:
            done = await mirrors.reconcile(
                app_id,
                repository_id,
                held=[line.encode() for line in held.splitlines()],
                repair=form.get("action") == "repair",
                sort=True,
            )
        session.flash(_reconciled(done))
    except LIVE_FAILED as error:
        _refusal(session, error)
    return _back(_mirror_page(app_id, repository_id))


def _reconciled(done: Reconciled) -> str:
    """The flash message of a verify or repair."""
    if done.in_sync:
        return "In sync: the app holds exactly what it acknowledged."
    if done.held is None:
        return "Not in sync: the digest differs. Paste the app's files to see which."
    detail = f"{done.summary} ({done.missing} missing, {done.changed} changed, {done.extra} extra)"
    if not done.repair:
        return f"{detail}; nothing was sent."
    if done.sync_requested:
        return f"{detail}: sending exactly the difference now."
    return f"{detail}: the difference is sent at the next sync ({done.sync_error})."


# -- repositories -----------------------------------------------------------------------------


@router.get("/repositories")
async def repositories(request: Request) -> Response:
    session = await _viewer(request)
    rows = await _service(request).repositories.list(live=True)
    body = render(
        request,
        session,
        "repositories.html",
        rows=rows,
        note=_live_note([row.live for row in rows if row.live]),
        link=lambda rid: ui_link(request, rid),
        title="Repositories",
    )
    return _html(body)


@router.get("/repositories/{repository_id}")
async def repository_page(request: Request, repository_id: str) -> Response:
    session = await _viewer(request)
    lookup = _service(request).repositories.get(repository_id, with_apps=True, live=True)
    row = await _found(request, session, lookup)
    body = render(
        request,
        session,
        "repository.html",
        repo=row,
        live=row.live,
        note=_live_note([row.live] if row.live else []),
        workflow_url=ui_link(request, repository_id),
        title=f"Repository {row.url}",
    )
    return _html(body)


async def _repository_action(request: Request, repository_id: str, what: str) -> Response:
    session, _ = await _action(request)
    service = _service(request)
    try:
        if what == "sync":
            await service.syncs.start(repository_id)
            session.flash("Sync requested.")
        elif what == "reset":
            await service.syncs.reset(repository_id)
            session.flash("Breaker closed; syncing now.")
        else:
            running = await service.syncs.pause(repository_id, what == "pause")
            if running:
                session.flash("Paused." if what == "pause" else "Resumed.")
            else:
                session.flash("Its sync loop is not running; sync it first.", "error")
    except LIVE_FAILED as error:
        _refusal(session, error)
    return _back(f"/admin/repositories/{quote(repository_id)}")


def _repository_route(what: str) -> Callable[[Request, str], Coroutine[Any, Any, Response]]:
    async def route(request: Request, repository_id: str) -> Response:
        return await _repository_action(request, repository_id, what)

    return route


for _what in ("sync", "reset", "pause", "resume"):
    router.add_api_route(
        f"/repositories/{{repository_id}}/{_what}", _repository_route(_what), methods=["POST"]
    )


# -- failed watches ---------------------------------------------------------------------------


@router.get("/failed")
async def failed(request: Request, app: str = "") -> Response:
    session = await _viewer(request)
    service = _service(request)
    try:
        rows, note = await service.admin.failed_watches(app or None)
    except UserError as error:
        _refusal(session, error)
        rows, note = [], None
    jobs = await service.admin.bulk_jobs()
    body = render(
        request,
        session,
        "failed.html",
        rows=rows,
        note=note,
        app_filter=app,
        jobs=jobs,
        running=any(not job.finished for job in jobs),
        job_link=lambda job_id: workflow_link(request, bulk_workflow_id(job_id)),
        title="Failed watches",
    )
    return _html(body)


@router.post("/failed/retry")
async def failed_retry(request: Request) -> Response:
    return await _watch_action(request, "retry")


@router.post("/failed/resync")
async def failed_resync(request: Request) -> Response:
    return await _watch_action(request, "resync")


async def _watch_action(request: Request, what: str) -> Response:
    session, form = await _action(request)
    service = _service(request)
    app_id, repository_id = form.get("app_id", ""), form.get("repository_id", "")
    back = _safe_next(form.get("back", "/admin/failed"))
    try:
        if what == "retry":
            asked = await service.watches.retry(app_id, repository_id)
            done = "Retrying: the watch is pending and its repository syncs now."
        else:
            asked = (await service.deliveries.redeliver(app_id, repository_id)).sync_requested
            done = "Resyncing: the app's ledger is forgotten and every file is sent again."
        if asked:
            session.flash(done)
        else:
            session.flash("Saved, but Temporal could not be asked; the next poll does it.", "error")
    except LIVE_FAILED as error:
        _refusal(session, error)
    return _back(back)


@router.post("/failed/retry-all")
async def failed_retry_all(request: Request) -> Response:
    return await _bulk(request, BulkAction.RETRY)


@router.post("/failed/resync-all")
async def failed_resync_all(request: Request) -> Response:
    return await _bulk(request, BulkAction.RESYNC)


async def _bulk(request: Request, what: BulkAction) -> Response:
    session, form = await _action(request)
    app_id = form.get("app_id", "").strip() or None
    back = "/admin/failed" + (f"?{urlencode({'app': app_id})}" if app_id else "")
    try:
        job = await _service(request).admin.start_bulk(what, app_id)
    except LIVE_FAILED as error:
        _refusal(session, error)
        return _back(back if isinstance(error, Unreachable) else "/admin/failed")
    session.flash(f"Started: {job.label} ({job.total} watches). Progress is below.")
    return _back(back)


# -- the delivery log -------------------------------------------------------------------------


@router.get("/deliveries")
async def deliveries(
    request: Request,
    app: str = "",
    repository: str = "",
    event: str = "",
    outcome: str = "",
    before: str = "",
) -> Response:
    session = await _viewer(request)
    filters = {"app": app, "repository": repository, "event": event, "outcome": outcome}
    try:
        page = await _service(request).deliveries.log(
            app_id=app.strip() or None,
            repository_id=repository.strip() or None,
            event=event or None,
            outcome=outcome or None,
            cursor=before or None,
            limit=DELIVERIES_PER_PAGE,
        )
        rows, next_cursor = page.items, page.next_cursor
        events = await _service(request).deliveries.events()
    except UserError as error:
        _refusal(session, error)
        rows, next_cursor, events = [], None, []
    older = None
    if next_cursor:
        older = "/admin/deliveries?" + urlencode(
            {**{k: v for k, v in filters.items() if v}, "before": next_cursor}
        )
    body = render(
        request,
        session,
        "deliveries.html",
        rows=rows,
        filters=filters,
        events=events,
        older=older,
        back=str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        title="Delivery log",
    )
    return _html(body)


@router.post("/deliveries/redeliver")
async def deliveries_redeliver(request: Request) -> Response:
    session, form = await _action(request)
    back = _safe_next(form.get("back", "/admin/deliveries"))
    try:
        done = await _service(request).deliveries.redeliver(
            form.get("app_id", ""), form.get("repository_id", "")
        )
        asked = done.sync_requested
        if asked:
            session.flash(
                "Redelivering: the app's ledger is forgotten and every file is sent again."
            )
        else:
            session.flash(
                "Ledger forgotten, but Temporal could not be asked; the next poll resends."
            )
    except LIVE_FAILED as error:
        _refusal(session, error)
    return _back(back)
