"""Security review of the hub's web surface (each test fails until its fault is fixed).

Found by reviewing the session cookie, cross-site requests, the pages' headers, what a record's version
gives away and what the parents' email carries. The tests drive the hub through its HTTP API and pages
the way a browser or a person with a token would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.hub.test_notify import SmtpEndpoint
from tests.hub.test_records import Records, _recorded

EVIL = "https://evil.example"


def _signed_in_browser(api: Records) -> TestClient:
    """A browser signed in to the board with a staff token (its own cookie jar)."""
    browser = TestClient(api.client.app)
    token = api.token("staff", "test-school")["Authorization"].removeprefix("Bearer ")
    signed = browser.post("/login", data={"token": token}, follow_redirects=False)
    assert signed.status_code == 303 and browser.cookies.get("seclusion_session"), signed.text
    return browser


# -- 1. Signing out is a state change any other web site can make -----------------------------------


def test_signing_out_is_refused_when_the_request_comes_from_another_site(api: Records) -> None:
    """`POST /logout` changes the session but, unlike `POST /login` and every cookie-authenticated API
    change, never looks at `Origin`. A page on any other site can auto-submit a form to it: the browser
    navigates top-level, and a top-level navigation may set (here: delete) a SameSite=Strict cookie, so
    the duty office's live board is signed out (no alerts shown, no alarm sound) until someone pastes a
    token again. docs/board.md: a request that changes something is accepted only from the hub's own
    pages."""
    browser = _signed_in_browser(api)
    try:
        forged = browser.post("/logout", headers={"Origin": EVIL}, follow_redirects=False)
        assert "seclusion_session" not in forged.headers.get("set-cookie", ""), (
            f"a sign-out sent from {EVIL} cleared the session cookie ({forged.status_code}): "
            f"{forged.headers.get('set-cookie')}"
        )
        # The hub's own sign-out button still works.
        own = browser.post("/logout", headers={"Origin": "http://testserver"}, follow_redirects=False)
        assert own.status_code == 303 and "seclusion_session" in own.headers.get("set-cookie", "")
    finally:
        browser.close()


# -- 2. The parents' copy as a web page has none of the pages' security headers ---------------------


def test_the_parents_copy_page_is_served_with_the_pages_security_headers(api: Records) -> None:
    """`GET /api/incidents/{id}/parent-copy.html` is a web page (the record page links to it) with the
    child's full name, what happened to them and the staff's words: it is served with only
    `Cache-Control`, without the Content-Security-Policy, frame-ancestors / X-Frame-Options and nosniff
    that every other page has (web.PAGE_HEADERS)."""
    incident = _recorded(api, api.ended_episode())
    page = api.client.get(f"{incident}/parent-copy.html", headers=api.token("staff", "test-school"))
    assert page.status_code == 200 and "Sam" in page.text
    csp = page.headers.get("content-security-policy", "")
    missing = [
        name
        for name, ok in (
            ("Content-Security-Policy default-src", "default-src" in csp),
            ("frame-ancestors 'none'", "frame-ancestors 'none'" in csp),
            ("X-Frame-Options", page.headers.get("x-frame-options", "").upper() == "DENY"),
            ("X-Content-Type-Options", page.headers.get("x-content-type-options") == "nosniff"),
            ("Cache-Control no-store", "no-store" in page.headers.get("cache-control", "")),
        )
        if not ok
    ]
    assert not missing, f"the parents' copy page lacks: {missing}; headers: {dict(page.headers)}"


# -- 3. A record's version lets anyone confirm a guess of why the copy was withheld ------------------


def _ts(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _version_if(body: dict[str, Any], reason: str) -> str:
    """What `record_version` would give if the withheld reason were `reason`: every other column of the
    record, as a member of staff without the DSL mark reads it from `GET /api/incidents/{id}`."""
    due = body["due"]
    columns: dict[str, Any] = {
        "id": body["id"],
        "episode_id": body["episode_id"],
        "site": body["site"],
        "room": body["room"],
        "status": body["status"],
        "opened_at": _ts(body["opened_at"]),
        "updated_at": _ts(body["updated_at"]),
        "pupil_id": body["pupil_id"],
        "classification": body["classification"],
        "record": body["record"],
        "ended_at": _ts(body["ended_at"]),
        "record_due_at": _ts(due["record"]),
        "parent_notice_due_at": _ts(due["parent_notice"]),
        "parent_copy_due_at": _ts(due["parent_copy"]),
        "authority_notice_due_at": _ts(due["authority_notice"]),
        "recorded_at": _ts(body["recorded_at"]),
        "recorded_by": body["recorded_by"],
        "classified_by": body["classified_by"],
        "parent_notified_at": _ts(body["parent_notified_at"]),
        "parent_copy_sent_at": _ts(body["parent_copy_sent_at"]),
        "parent_copy_method": None,  # never set on a withheld copy
        "parent_copy_withheld_at": _ts(body["parent_copy_withheld_at"]),
        "parent_copy_withheld_by": body["parent_copy_withheld_by"],
        "parent_copy_withheld_reason": reason,
        "authority_notified_at": _ts(body["authority_notified_at"]),
        "reviewed_at": _ts(body["reviewed_at"]),
        "reviewed_by": body["reviewed_by"],
        "closed_at": _ts(body["closed_at"]),
        "closed_by": body["closed_by"],
        "signed": None,  # not signed off yet
    }
    stored = json.dumps(columns, sort_keys=True, default=str)
    return '"' + hashlib.sha256(stored.encode()).hexdigest()[:32] + '"'


def test_a_withheld_copys_reason_cannot_be_confirmed_from_the_records_version(api: Records) -> None:
    """Why a designated safeguarding lead withheld the parents' copy is shown to DSLs only
    (records.incident_json, docs/records.md). But the record's `version` (and `ETag`), shown to every
    member of staff of the site and in the incident list, is an unkeyed SHA-256 of every column, the
    reason included, and every other column is in the staff's own view of the record. So anyone with a
    staff token can test guesses offline ("a parent is under police investigation", "a child protection
    plan names the father", ...) until one gives the version: the reason is confirmed without ever
    being shown. (With real clocks the sub-millisecond part of two timestamps adds ~1000 tries.)"""
    incident = _recorded(api, api.ended_episode())
    reason = "Father is the subject of a police investigation"
    withheld = api.client.post(
        f"{incident}/parent-copy/withhold", json={"reason": reason}, headers=api.dsl_token()
    )
    assert withheld.status_code == 200, withheld.text

    staff = api.token("staff", "test-school")  # no DSL mark
    body = api.client.get(incident, headers=staff).json()
    assert body["parent_copy_withheld_reason"] is None, "the reason itself is hidden from staff"
    listed = api.client.get("/api/incidents", headers=staff).json()["items"]
    assert body["version"] in {item["version"] for item in listed}

    guesses = [
        "Mother has asked for no contact",
        "Child protection plan in place",
        "Father is the subject of a police investigation",
        "Social care advised against it",
    ]
    confirmed = [g for g in guesses if _version_if(body, g) == body["version"]]
    assert confirmed == [], (
        f"a member of staff without the DSL mark confirmed the withheld reason from the version: {confirmed}"
    )


# -- 4. The email to parents is sent as HTML made of unescaped text ----------------------------------


def test_the_email_to_the_parents_carries_no_markup_from_a_childs_name(tmp_path: Path) -> None:
    """`POST /api/incidents/{id}/parent-copy/send` mails the copy from the school's own account. The
    covering email is plain text (parent_mail.covering_email), but it is handed to Apprise with no
    `body_format`, and Apprise's email plugin sends an HTML part by default: the text goes into that
    part unescaped. A name on the register (typed by a senior, or imported from another system's CSV)
    such as `Sam<a href=...>` becomes a live link, an image that tells a third party when the parents
    read it, or any other markup, in a letter from the school to the family. (Ordinary text suffers
    too: the HTML part loses the email's paragraph break.)"""
    with SmtpEndpoint() as smtp:
        api = Records(
            tmp_path,
            f"sqlite:///{tmp_path / 'hub.db'}",
            parent_mail=f"mailto://office@127.0.0.1:{smtp.port}?from=office@hillside.example",
        )
        try:
            name = 'Sam<a href="https://evil.example/">Open</a><img src="https://evil.example/t">'
            incident = _recorded(api, api.ended_episode(), first=name)
            sent = api.client.post(
                f"{incident}/parent-copy/send",
                json={"to": "parent@home.example"},
                headers=api.token("staff", "test-school"),
            )
            assert sent.status_code == 200, sent.text
            [mail] = smtp.messages
            html_parts = [
                str(part.get_content()) for part in mail.walk() if part.get_content_type() == "text/html"
            ]
            for html in html_parts:
                assert "<a " not in html and "<img" not in html, (
                    f"the child's name became markup in the email's HTML part: {html!r}"
                )
        finally:
            api.service.stop()
            api.client.close()
            api.store.close()


# -- 5. The sign-in form: a 500 for anyone, before any credential ------------------------------------


def test_a_sign_in_form_with_many_fields_is_refused_not_a_server_error(api: Records) -> None:
    """`POST /login` parses the form with `max_num_fields=10`, which raises ValueError past ten fields:
    an unauthenticated request gets a 500 (and a traceback in the hub's log) instead of the sign-in
    page saying the token is not valid."""
    client = TestClient(api.client.app, raise_server_exceptions=False)
    try:
        body = "&".join(f"f{i}=x" for i in range(12)) + "&token=sct_nope"
        answer = client.post(
            "/login", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert answer.status_code in (400, 401, 413, 422), f"{answer.status_code}: {answer.text[:200]}"
    finally:
        client.close()
