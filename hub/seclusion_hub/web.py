"""The web pages: the login form, the live board, its static files, and the live stream (`GET /api/live`).

A staff member signs in by pasting the access token an administrator made with `seclusion-hub token
create`; the hub keeps it in an HttpOnly, SameSite=Strict cookie, which the API then accepts wherever it
accepts a bearer token. The board's files are plain HTML, CSS and JavaScript shipped in the package:
no build step and nothing fetched from elsewhere (the hub may run on a school network with no internet).
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations at definition
# time, and they name the `staff` dependency handed to `web_router`.

import html
import importlib.resources
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Final
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from seclusion_contract import format_ts

from .auth import Principal, principal_for
from .live import RETRY_MS, LiveFeed, SubscriptionEnded, sse_frame
from .models import AuditEntry
from .service import HubService

log = logging.getLogger(__name__)

SESSION_COOKIE: Final = "seclusion_session"
MAX_FORM_BYTES: Final = 4096
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

_STATIC: Final = {
    "board.js": "text/javascript; charset=utf-8",
    "board.css": "text/css; charset=utf-8",
}

# The pages load only their own files, talk only to the hub, and may not be framed (a hidden frame
# could trick a click on "Acknowledge").
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer, browsers send `Origin: null` on our own POSTs.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# A document the hub renders whole (the parents' copy as a web page): its own inline style, nothing
# else at all (no script, no request), and never framed.
DOCUMENT_HEADERS: Final = {
    **PAGE_HEADERS,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
}


def _asset(name: str) -> str:
    return (importlib.resources.files("seclusion_hub") / "web" / name).read_text(encoding="utf-8")


def static_file(name: str, media_types: Mapping[str, str]) -> Response:
    """One of the pages' own scripts or style sheets, by name among `media_types` (code only, no data:
    served without a session, like the sign-in page); any other name is a 404."""
    media_type = media_types.get(name)
    if media_type is None:
        raise HTTPException(404, "no such file")
    return Response(
        _asset(name),
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def _public(request: Request) -> tuple[str, str] | None:
    """The scheme and host people reach the hub at (SECLUSION_PUBLIC_URL), if it is set: behind the
    school's HTTPS proxy the hub itself is asked over plain http, perhaps with the proxy's own Host."""
    url = str(getattr(request.app.state, "public_url", "") or "")
    if not url:
        return None
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _secure(request: Request) -> bool:
    """Whether the session cookie is marked Secure: the page was served over https, here or at the
    public address in front of the hub."""
    public = _public(request)
    return request.url.scheme == "https" or (public is not None and public[0] == "https")


def _same_origin(request: Request) -> bool:
    """Whether a browser's request comes from the hub's own pages: its Origin is the hub's Host, or the
    public address (scheme and host); no Origin: not a browser's cross-site request, which
    SameSite=Strict keeps cookieless anyway."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    host = request.headers.get("host")
    if host is not None and parts.netloc == host:
        return True
    return _public(request) == (parts.scheme.lower(), parts.netloc.lower())


def session_token(request: Request) -> str | None:
    """The token in the session cookie, where the request may use it: a request that changes something
    must come from the hub's own pages."""
    token = request.cookies.get(SESSION_COOKIE, "").strip()
    if not token:
        return None
    if request.method not in SAFE_METHODS and not _same_origin(request):
        return None
    return token


def request_token(request: Request) -> str | None:
    """The token a request presents: its bearer token, else the session cookie (as `deps.principal`)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return session_token(request)


def _login_page(error: str | None = None, status_code: int = 200, token_refused: bool = True) -> HTMLResponse:
    """The sign-in form, with `error` above it (read out at once: role=alert). An error about the token
    also marks the token field invalid, describes the field by it and puts the cursor back in it."""
    message = f'<p id="login-error" class="form-error" role="alert">{html.escape(error)}</p>' if error else ""
    field = ' aria-invalid="true" aria-describedby="login-error" autofocus' if error and token_refused else ""
    body = _asset("login.html").replace("{{error}}", message).replace("{{token_field}}", field)
    return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)


def web_router(service: HubService, live: LiveFeed, staff: Callable[..., Principal]) -> APIRouter:
    """The pages and the live stream; `staff` is the API's dependency for a staff member or above."""
    router = APIRouter()
    store = service.store

    async def _signed_in(request: Request) -> Principal | None:
        token = session_token(request)
        return await run_in_threadpool(principal_for, store, token) if token else None

    @router.get("/login", include_in_schema=False)
    def login_form() -> HTMLResponse:
        """The sign-in page (open: it shows nothing but the form)."""
        return _login_page()

    @router.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        """Check the pasted token and keep it in the session cookie."""
        if not _same_origin(request):
            refused = "This form must be sent from the hub's own sign-in page."
            return _login_page(refused, 403, token_refused=False)
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return _login_page("That is not an access token.", 401)
        try:
            fields = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=10)
        except ValueError:  # more fields than a sign-in form has
            return _login_page("That is not an access token.", 401)
        token = (fields.get("token") or [""])[0].strip()
        who = await run_in_threadpool(principal_for, store, token) if token else None
        if who is None:
            return _login_page("That token is not valid (unknown, mistyped or revoked). Try again.", 401)
        await run_in_threadpool(
            store.audit,
            AuditEntry(
                at=service.clock.now(), actor=who.name, action="login", target_type="web", target_id="board"
            ),
        )
        response = RedirectResponse("/", status.HTTP_303_SEE_OTHER, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            path="/",
            secure=_secure(request),
        )
        return response

    @router.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        """Forget the session cookie: only from the hub's own pages (another site's form could sign the
        live board out, and nobody would see its alerts)."""
        if not _same_origin(request):
            return Response(
                "Signing out must be done from the hub's own pages.",
                status.HTTP_403_FORBIDDEN,
                media_type="text/plain",
                headers={"Cache-Control": "no-store"},
            )
        response = RedirectResponse(
            "/login", status.HTTP_303_SEE_OTHER, headers={"Cache-Control": "no-store"}
        )
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request)
        )
        return response

    @router.get("/", include_in_schema=False)
    async def board(request: Request) -> Response:
        """The live board; without a valid session, the sign-in page."""
        who = await _signed_in(request)
        if who is None:
            return RedirectResponse(
                "/login", status.HTTP_303_SEE_OTHER, headers={"Cache-Control": "no-store"}
            )
        # Leaders reach their review from here as from every other page (others would be refused it).
        review = ' <a href="/review">Review</a>' if who.has_role("leader") else ""
        # Each site's timezone (no personal data): the board shows times as the school's clocks do, on
        # any browser (a laptop still on another zone, a leader away).
        # Only the user's own sites: another school on the same hub is none of their business.
        zones = json.dumps(
            {site_id: site.spec.timezone for site_id, site in service.sites.items() if who.may_see(site_id)}
        )
        body = (
            _asset("board.html")
            .replace("{{user}}", html.escape(who.name))
            .replace("{{review}}", review)
            .replace("{{zones}}", html.escape(zones, quote=True))
        )
        return HTMLResponse(body, headers=PAGE_HEADERS)

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        """The board's script and style sheet."""
        return static_file(name, _STATIC)

    async def _still(who: Principal, token: str) -> bool:
        """Whether the stream's token still stands for who opened it (not revoked since)."""
        try:
            return await run_in_threadpool(principal_for, store, token) == who
        except Exception:
            # The database did not answer: the stream goes on (it carries the alerts), and the token
            # is looked at again with the next event or keep-alive.
            log.warning("could not look at a live stream's token again", exc_info=True)
            return True

    async def _stream(who: Principal, token: str) -> AsyncIterator[str]:
        with live.subscribe(who) as sub:
            hello = {
                "v": 1,
                "user": who.name,
                "role": who.role,
                "sites": sorted(who.sites) if who.sites is not None else None,
                "server_time": format_ts(service.clock.now()),
                "keepalive_s": live.keepalive_s,
            }
            yield f"retry: {RETRY_MS}\n" + sse_frame("hello", hello)
            while True:
                try:
                    batch = await sub.next_batch(live.keepalive_s)
                except SubscriptionEnded as end:
                    yield sse_frame("reload", {"reason": end.reason})
                    return
                # A token revoked while its stream is open ends the session straight away (docs/board.md):
                # looked at again before each burst of events and each keep-alive (every 15 s at most).
                if not await _still(who, token):
                    yield sse_frame("signed_out", {})
                    return
                # The keep-alive is an event the page sees (a comment never reaches it): a board that
                # hears nothing for a few keep-alives says it is not live (docs/board.md).
                ping = sse_frame("ping", {"server_time": format_ts(service.clock.now())})
                yield "".join(item.sse() for item in batch) if batch else ping

    @router.get(
        "/api/live",
        tags=["live"],
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": (
                    "Server-Sent Events: `hello`, then `alert`, `room` and `ping` (every keep-alive); "
                    "`reload` or `signed_out` ends it"
                ),
            },
            503: {"description": "the hub is stopping"},
        },
    )
    async def live_stream(request: Request, who: Annotated[Principal, Depends(staff)]) -> StreamingResponse:
        """The live stream of the caller's sites (docs/board.md): `hello`, then every `alert` and `room`
        change as it happens, and a `ping` event every 15 s when there is nothing else. A stream that
        falls behind, or the hub stopping, ends it with a `reload` event: fetch the rooms and alerts
        again once reconnected. A token revoked while its stream is open ends it with `signed_out`."""
        if live.closed:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the hub is stopping")
        token = request_token(request)
        if token is None:  # the dependency admitted the caller: never so
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "credentials required")
        return StreamingResponse(
            _stream(who, token),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
