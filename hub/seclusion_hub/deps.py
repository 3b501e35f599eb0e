"""Who is asking, as FastAPI dependencies: the bearer token or the web pages' session cookie, and the
role each endpoint needs (contract sections 5 and 6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .auth import Principal, Role, principal_for
from .store import Store
from .web import session_token

_bearer = HTTPBearer(auto_error=False)

# Every list of the API takes these (contract section 6).
Limit = Annotated[int, Query(ge=1, le=1000, description="at most 1000")]
# Long enough for the register's cursor after a child of two 100-character names in a script of
# four-byte letters (surname, first name and id, as JSON, in base64).
Cursor = Annotated[str | None, Query(max_length=1200)]


def principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from the bearer token or the web pages' session cookie; 401 without valid credentials."""
    bearer = creds is not None and creds.scheme.lower() == "bearer"
    token = creds.credentials if creds is not None and bearer else session_token(request)
    if not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "credentials required", {"WWW-Authenticate": "Bearer"}
        )
    store: Store = request.app.state.store
    who = principal_for(store, token)
    if who is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown or revoked token", {"WWW-Authenticate": "Bearer"}
        )
    return who


def site_allowed(who: Principal, site: str) -> None:
    """403 unless the caller may see `site`: never saying which site (asked for by id, a record's school
    is not the caller's to learn)."""
    if not who.may_see(site):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not one of your sites")


def needs(role: Role) -> Callable[[Principal], Principal]:
    """A dependency that admits the role and every role above it; 403 for the rest."""

    def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.has_role(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"needs the {role} role")
        return who

    return check


Staff = Annotated[Principal, Depends(needs("staff"))]
Senior = Annotated[Principal, Depends(needs("senior"))]
Admin = Annotated[Principal, Depends(needs("admin"))]
Leader = Annotated[Principal, Depends(needs("leader"))]
