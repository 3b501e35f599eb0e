"""Notifications: every channel keeps one contract, and no channel ever holds back another.

The channels are exercised for real: Apprise posts JSON to an HTTP server and mail to an SMTP server
that this file starts on loopback ports; webhooks post to the same HTTP server. Dispatcher tests step a
FakeClock and wake the workers instead of sleeping; the one test on the real clock polls with a deadline.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from seclusion_contract import parse_ts
from seclusion_hub.core.clock import FakeClock
from seclusion_hub.core.site import Recipient, Webhook
from seclusion_hub.errors import ConfigError
from seclusion_hub.notify import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    WORDING,
    AppriseChannel,
    Attempt,
    Channel,
    ChannelError,
    DeliveryError,
    Dispatcher,
    DispatcherStopped,
    Notice,
    Progress,
    RetryPolicy,
    WebhookChannel,
    channels_for,
    new_delivery_id,
    render_message,
    sign,
    verify_signature,
)
from seclusion_hub.notify.channels import webhook_payload

# Summer time in London: 09:15:02 UTC is 10:15:02 on the school's clocks.
DUE = dt.datetime(2026, 6, 15, 9, 15, 2, tzinfo=dt.UTC)
LINK = "https://hub.example.org/alerts/alert-1"
SECRET = "whsec-0123456789abcdef"
PASSWORD = "pa55-w0rd-xyz"
WAIT_S = 10.0  # how long a test waits for a worker thread before failing; never a timer of ours


def notice(**changes: Any) -> Notice:
    """A supervision lapse in Calm room 1, due at 10:15:02 London time."""
    values: dict[str, Any] = {
        "delivery_id": new_delivery_id(),
        "alert_id": "alert-1",
        "kind": "supervision_lapse",
        "severity": "critical",
        "site": "demo-school",
        "room": "calm-1",
        "room_name": "Calm room 1",
        "tier": "room",
        "reason": "raised",
        "due_at": DUE,
        "raised_at": DUE + dt.timedelta(milliseconds=400),
        "late": False,
        "link": LINK,
        "timezone": "Europe/London",
    }
    values.update(changes)
    return Notice(**values)


# ---------------------------------------------------------------------------------------------------
# Local endpoints


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


class HttpEndpoint:
    """A real HTTP server on a free loopback port: `/ok` answers 200, `/fail` 500, `/moved` 302."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.arrived = threading.Condition()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status = {"/ok": 200, "/fail": 500, "/moved": 302}.get(self.path.split("?")[0], 404)
                if status == 200:
                    with endpoint.arrived:
                        endpoint.requests.append(Request(self.path, dict(self.headers.items()), body))
                        endpoint.arrived.notify_all()
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/ok")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HttpEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(WAIT_S)


class SmtpEndpoint:
    """A real SMTP server (aiosmtpd) on a free loopback port; mail to `reject@...` is refused with 554."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.port = free_port()
        endpoint = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if any(str(r).startswith("reject@") for r in envelope.rcpt_tos):
                    return "554 5.7.1 Rejected by policy"
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                assert isinstance(message, email.message.EmailMessage)
                endpoint.messages.append(message)
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpEndpoint:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


class SilentEndpoint:
    """A port that accepts connections and never says a word: every client waits for its timeout."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def free_port() -> int:
    """A loopback port nobody listens on (a dead endpoint)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def http_endpoint() -> Iterator[HttpEndpoint]:
    with HttpEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def smtp_endpoint() -> Iterator[SmtpEndpoint]:
    with SmtpEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def silent_endpoint() -> Iterator[SilentEndpoint]:
    endpoint = SilentEndpoint()
    yield endpoint
    endpoint.close()


# ---------------------------------------------------------------------------------------------------
# Every channel type behind one set of contract tests


@dataclass
class ChannelCase:
    """How to reach one channel type: healthy, refused, dead, silent, and what arrived."""

    healthy: Callable[[], Channel]
    refused: Callable[[], Channel]  # the server answers and says no (HTTP 500, SMTP 554)
    dead: Callable[[], Channel]  # nothing listens
    silent: Callable[[float], Channel]  # connects, never answers
    with_secrets: Callable[[], Channel]  # built from a URL full of secrets, never sent
    secrets: tuple[str, ...]
    arrived: Callable[[], list[str]]  # the text of what reached the endpoint


def _json_texts(endpoint: HttpEndpoint) -> list[str]:
    return [r.body.decode() for r in endpoint.requests]


def _mail_texts(endpoint: SmtpEndpoint) -> list[str]:
    texts = []
    for message in endpoint.messages:
        part = message.get_body(preferencelist=("plain",))
        assert isinstance(part, email.message.EmailMessage)
        texts.append(f"{message['Subject']}\n{part.get_content()}")
    return texts


def apprise_json_case(request: pytest.FixtureRequest) -> ChannelCase:
    http: HttpEndpoint = request.getfixturevalue("http_endpoint")
    silent: SilentEndpoint = request.getfixturevalue("silent_endpoint")
    auth = f"hub:{PASSWORD}@"
    return ChannelCase(
        healthy=lambda: AppriseChannel(f"json://{auth}127.0.0.1:{http.port}/ok"),
        refused=lambda: AppriseChannel(f"json://{auth}127.0.0.1:{http.port}/fail"),
        dead=lambda: AppriseChannel(f"json://{auth}127.0.0.1:{free_port()}/ok"),
        silent=lambda t: AppriseChannel(f"json://{auth}127.0.0.1:{silent.port}/ok", timeout=t),
        with_secrets=lambda: AppriseChannel(f"jsons://hub:{PASSWORD}@hooks.example.org/ok?token=tok-98765"),
        secrets=(PASSWORD, "tok-98765"),
        arrived=lambda: _json_texts(http),
    )


def apprise_mail_case(request: pytest.FixtureRequest) -> ChannelCase:
    smtp: SmtpEndpoint = request.getfixturevalue("smtp_endpoint")
    silent: SilentEndpoint = request.getfixturevalue("silent_endpoint")
    to = "from=hub@school.example&to={}@school.example&name=Seclusion+hub"
    return ChannelCase(
        healthy=lambda: AppriseChannel(f"mailto://127.0.0.1:{smtp.port}?" + to.format("senior")),
        refused=lambda: AppriseChannel(f"mailto://127.0.0.1:{smtp.port}?" + to.format("reject")),
        dead=lambda: AppriseChannel(
            f"mailto://hub:{PASSWORD}@127.0.0.1:{free_port()}?" + to.format("senior")
        ),
        silent=lambda t: AppriseChannel(
            f"mailto://127.0.0.1:{silent.port}?" + to.format("senior"), timeout=t
        ),
        with_secrets=lambda: AppriseChannel(
            f"mailtos://hub:{PASSWORD}@smtp.example.org?to=dsl@school.example"
        ),
        secrets=(PASSWORD,),
        arrived=lambda: _mail_texts(smtp),
    )


def webhook_case(request: pytest.FixtureRequest) -> ChannelCase:
    http: HttpEndpoint = request.getfixturevalue("http_endpoint")
    silent: SilentEndpoint = request.getfixturevalue("silent_endpoint")
    return ChannelCase(
        healthy=lambda: WebhookChannel(http.url("/ok"), SECRET),
        refused=lambda: WebhookChannel(http.url("/fail?key=tok-98765"), SECRET),
        dead=lambda: WebhookChannel(f"http://127.0.0.1:{free_port()}/ok?key=tok-98765", SECRET),
        silent=lambda t: WebhookChannel(f"http://127.0.0.1:{silent.port}/ok", SECRET, timeout=t),
        with_secrets=lambda: WebhookChannel(
            f"https://hub:{PASSWORD}@hooks.example.org/in?key=tok-98765", SECRET
        ),
        secrets=(PASSWORD, "tok-98765", SECRET),
        arrived=lambda: _json_texts(http),
    )


CASES: dict[str, Callable[[pytest.FixtureRequest], ChannelCase]] = {
    "apprise-json": apprise_json_case,
    "apprise-mailto": apprise_mail_case,
    "webhook": webhook_case,
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> ChannelCase:
    return CASES[request.param](request)


def test_a_notice_arrives_with_the_room_the_alert_the_time_and_the_link(case: ChannelCase) -> None:
    case.healthy().send(notice())

    [text] = case.arrived()
    assert "Calm room 1" in text
    assert "supervision lapse" in text
    assert "10:15:02" in text
    assert LINK in text


def test_what_arrives_names_no_child(case: ChannelCase) -> None:
    case.healthy().send(notice())

    [text] = case.arrived()
    for word in ("child_name", "pupil", "date_of_birth", "None"):
        assert word not in text


def test_an_endpoint_that_refuses_is_a_delivery_error_with_a_reason_and_no_secret(case: ChannelCase) -> None:
    channel = case.refused()

    with pytest.raises(DeliveryError) as caught:
        channel.send(notice())

    reason = caught.value.reason
    assert reason
    assert isinstance(caught.value, ConnectionError)  # it resembles the built-in it is
    for secret in case.secrets:
        assert secret not in reason
        assert secret not in str(caught.value)
    assert case.arrived() == []


def test_an_endpoint_nobody_listens_on_is_a_delivery_error_with_no_secret(case: ChannelCase) -> None:
    with pytest.raises(DeliveryError) as caught:
        case.dead().send(notice())

    assert caught.value.reason
    for secret in (*case.secrets, PASSWORD):
        assert secret not in caught.value.reason


def test_an_endpoint_that_never_answers_times_out(case: ChannelCase) -> None:
    channel = case.silent(0.5)
    started = time.monotonic()

    with pytest.raises(DeliveryError, match="timed out"):
        channel.send(notice())

    assert time.monotonic() - started < 5.0


def test_the_label_shows_the_scheme_and_host_and_no_secret(case: ChannelCase) -> None:
    channel = case.with_secrets()

    assert "example.org" in channel.label
    assert channel.label.split(":")[0] in ("apprise", "webhook")
    for secret in case.secrets:
        assert secret not in channel.label
        assert secret not in repr(channel)
    assert "@" not in channel.label


# ---------------------------------------------------------------------------------------------------
# Webhooks: the signed JSON body


def test_a_webhook_is_signed_and_the_signature_verifies_only_with_the_secret(
    http_endpoint: HttpEndpoint,
) -> None:
    sent = notice()
    WebhookChannel(http_endpoint.url("/ok"), SECRET).send(sent)

    [request] = http_endpoint.requests
    header = request.headers[SIGNATURE_HEADER]
    now = dt.datetime.now(dt.UTC)
    assert verify_signature(SECRET, header, request.body, now=now)
    assert not verify_signature("another-secret-0123456789", header, request.body, now=now)
    assert not verify_signature(SECRET, header, request.body.replace(b"calm-1", b"calm-2"), now=now)
    assert not verify_signature(SECRET, header, request.body, now=now + dt.timedelta(minutes=10))
    assert request.headers[DELIVERY_HEADER] == sent.delivery_id


def test_the_signature_is_hmac_sha256_of_the_timestamp_and_the_raw_body() -> None:
    import hashlib
    import hmac

    body = b'{"v":1}'
    expected = hmac.new(SECRET.encode(), b"1781514902." + body, hashlib.sha256).hexdigest()

    assert sign(SECRET, body, 1781514902) == f"t=1781514902,v1={expected}"
    assert not verify_signature(SECRET, "v1=" + expected, body)  # no t: refused
    assert not verify_signature(SECRET, "t=1781514902", body)  # no v1: refused


def test_a_webhook_body_holds_the_notice_and_nothing_else(http_endpoint: HttpEndpoint) -> None:
    sent = notice(reason="escalated", tier="senior")
    WebhookChannel(http_endpoint.url("/ok"), SECRET).send(sent)

    [request] = http_endpoint.requests
    body = json.loads(request.body)
    assert set(body) == {
        "v",
        "delivery_id",
        "alert_id",
        "kind",
        "severity",
        "site",
        "room",
        "room_name",
        "site_name",
        "tier",
        "reason",
        "late",
        "due_at",
        "raised_at",
        "timezone",
        "link",
        "title",
        "body",
        "ts",
    }
    assert body["v"] == 1
    assert body["delivery_id"] == sent.delivery_id
    assert (body["kind"], body["room"], body["tier"], body["reason"]) == (
        "supervision_lapse",
        "calm-1",
        "senior",
        "escalated",
    )
    assert body["due_at"] == "2026-06-15T09:15:02.000Z"
    assert parse_ts(body["ts"]) > DUE
    assert request.headers["Content-Type"].startswith("application/json")


def test_a_webhook_redirect_is_not_followed_and_is_a_failure(http_endpoint: HttpEndpoint) -> None:
    with pytest.raises(DeliveryError, match="HTTP 302"):
        WebhookChannel(http_endpoint.url("/moved"), SECRET).send(notice())

    assert http_endpoint.requests == []


def test_a_webhook_needs_an_http_url_and_a_secret() -> None:
    with pytest.raises(ChannelError):
        WebhookChannel("ftp://hooks.example.org/in", SECRET)
    with pytest.raises(ChannelError):
        WebhookChannel("https://hooks.example.org/in", "")


def test_two_destinations_on_one_host_have_two_labels_and_a_new_password_keeps_the_label() -> None:
    duty = AppriseChannel(f"mailtos://hub:{PASSWORD}@smtp.example.org?to=duty@school.example")
    head = AppriseChannel(f"mailtos://hub:{PASSWORD}@smtp.example.org?to=head@school.example")
    rotated = AppriseChannel("mailtos://hub:another-password@smtp.example.org?to=duty@school.example")
    hook_a = WebhookChannel("https://hooks.example.org/a", SECRET)
    hook_b = WebhookChannel("https://hooks.example.org/b", SECRET)

    assert duty.label != head.label
    assert duty.label == rotated.label
    assert hook_a.label != hook_b.label
    assert re.fullmatch(r"apprise:mailtos://smtp\.example\.org#[0-9a-f]{8}", duty.label)
    assert re.fullmatch(r"webhook:https://hooks\.example\.org#[0-9a-f]{8}", hook_a.label)


def test_an_apprise_url_apprise_does_not_know_is_refused_without_showing_the_url() -> None:
    with pytest.raises(ChannelError) as caught:
        AppriseChannel(f"nosuchservice://hub:{PASSWORD}@example.org/")

    assert PASSWORD not in str(caught.value)
    assert "nosuchservice" in str(caught.value)


def test_a_token_in_the_host_place_is_masked_in_the_label() -> None:
    channel = AppriseChannel("ntfy://my-private-topic-42")

    assert "my-private-topic-42" not in channel.label
    assert channel.label.startswith("apprise:ntfy")


# ---------------------------------------------------------------------------------------------------
# Channels from the site file's recipients


def test_channels_for_expands_variables_and_lists_each_destination_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMTP_PASS", PASSWORD)
    monkeypatch.setenv("WEBHOOK_SECRET_1", SECRET)
    mail = "mailtos://hub:${SMTP_PASS}@smtp.example.org?to=duty@school.example"
    hook = Webhook(url="https://hooks.example.org/in", secret="${WEBHOOK_SECRET_1}")
    recipients = [
        Recipient(name="Duty senior leader", tier="senior", notify=(mail,), webhooks=(hook,)),
        Recipient(name="Deputy head", tier="senior", notify=(mail, "ntfys://ntfy.example.org/calm-rooms")),
        Recipient(name="Room staff", tier="room", notify=("json://127.0.0.1:9/",)),
    ]

    senior = channels_for(recipients, tier="senior")
    everyone = channels_for(recipients)

    assert [c.label.partition("#")[0] for c in senior] == [
        "apprise:mailtos://smtp.example.org",
        "webhook:https://hooks.example.org",
        "apprise:ntfys://ntfy.example.org",
    ]
    assert len(everyone) == 4
    assert senior[0] == AppriseChannel(mail.replace("${SMTP_PASS}", PASSWORD))
    assert senior[1] == WebhookChannel("https://hooks.example.org/in", SECRET)


def test_channels_for_takes_the_callers_expansion() -> None:
    recipients = [Recipient(name="Duty", tier="room", notify=("json://${HOST}:9/",))]

    [channel] = channels_for(recipients, lambda value: value.replace("${HOST}", "10.0.0.7"))

    assert channel.label.startswith("apprise:json://10.0.0.7:9#")


def test_channels_for_names_the_recipient_and_entry_of_a_bad_url_and_not_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMTP_PASS", PASSWORD)
    recipients = [Recipient(name="Duty", tier="room", notify=("json://x/", "bogus://u:${SMTP_PASS}@h/"))]

    with pytest.raises(ConfigError) as caught:
        channels_for(recipients)

    assert "Duty" in str(caught.value)
    assert "notify.1" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_channels_for_refuses_a_variable_that_is_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    recipients = [Recipient(name="Duty", tier="room", notify=("json://${NOT_SET_ANYWHERE}/",))]

    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        channels_for(recipients)


# ---------------------------------------------------------------------------------------------------
# The words a person reads

SEMANTICS_KINDS = {
    "episode_started",
    "supervision_lapse",
    "duration_warning",
    "duration_escalation",
    "duration_limit",
    "review_due",
    "no_movement",
    "lock_forbidden",
    "seclusion_prohibited",
    "device_offline",
    "sensor_fault",
    "clock_skew",
    "report_overdue",
}


def test_every_kind_of_the_alert_table_has_its_wording() -> None:
    assert set(WORDING) == SEMANTICS_KINDS


@pytest.mark.parametrize("kind", sorted(SEMANTICS_KINDS))
@pytest.mark.parametrize("severity", ["info", "warning", "critical"])
def test_each_kind_reads_plainly_with_the_room_and_the_local_time(kind: str, severity: str) -> None:
    message = render_message(notice(kind=kind, severity=severity))

    assert message.title == f"{severity.upper()}: {WORDING[kind].name}, Calm room 1"
    assert "Calm room 1" in message.body
    assert "10:15:02 (Europe/London local time)" in message.body
    assert "09:15:02" not in message.body  # never UTC on a school's phone
    assert message.body.endswith(LINK)
    assert WORDING[kind].action in message.body
    for text in (message.title, message.body):
        assert "None" not in text
        assert "{" not in text
        assert "_" not in text.replace(LINK, "")


def test_the_brief_example_reads_as_written() -> None:
    message = render_message(notice())

    assert message.title == "CRITICAL: supervision lapse, Calm room 1"
    # The time is when the grace ran out, and the words say so (they said "since", 15 s late).
    assert message.body == (
        "Nobody has been recorded supervising Calm room 1 (at the viewing panel, or by a check-in) for "
        "longer than allowed, as of 10:15:02 (Europe/London local time). Go to the room now. "
        f"Acknowledge: {LINK}"
    )


def test_a_reminder_sent_days_after_its_alert_dates_its_times() -> None:
    """docs/notifications.md: "Times are in the site's `timezone`, with the date in front when it is not
    today's": today is the day it is sent (a review's reminder, an escalation overnight), not the day
    the alert was raised."""
    later = DUE + dt.timedelta(days=2)
    reminder = notice(kind="review_due", severity="warning", reason="renotify", sent_at=later)
    assert "15 Jun 2026 10:15:02" in render_message(reminder).body
    # The webhook's words are dated against the moment it goes out.
    undated = notice(kind="review_due", severity="warning", reason="renotify")
    assert "15 Jun 2026 10:15:02" in webhook_payload(undated, later)["body"]
    assert "15 Jun" not in render_message(undated).body  # sent the day it was raised: the time alone


def test_the_start_of_an_episode_says_a_child_is_in_a_closed_room_never_that_it_is_in_use() -> None:
    message = render_message(notice(kind="episode_started", severity="info"))

    assert message.title == "INFO: child in a closed room, Calm room 1"
    assert message.body.startswith("A child has been in Calm room 1 with the door closed since ")
    assert "in use" not in message.title + message.body


def test_without_a_link_the_message_says_where_to_go_and_never_none() -> None:
    message = render_message(notice(link=None))

    assert "None" not in message.body
    assert message.body.endswith("Open the live board to acknowledge.")


def test_an_alert_that_needs_no_acknowledgement_says_details() -> None:
    message = render_message(notice(kind="episode_started", severity="info"))

    assert f"Details: {LINK}" in message.body
    assert "Acknowledge" not in message.body


def test_escalations_reminders_and_late_alerts_say_so() -> None:
    escalated = render_message(notice(reason="escalated"))
    reminder = render_message(notice(reason="renotify"))
    late = render_message(
        notice(reason="late", late=True, raised_at=DUE + dt.timedelta(days=1, hours=2)),
    )

    assert "(escalated)" in escalated.title
    # As of when the hub decided to escalate (a retry may reach someone after a colleague acknowledged).
    assert re.search(r"Nobody had acknowledged it by \d\d:\d\d:\d\d\.", escalated.body), escalated.body
    released = render_message(notice(reason="late", late=False))
    assert "(after maintenance)" in released.title and "(late)" not in released.title
    assert "held while the room was in maintenance" in released.body and "learned of it" not in released.body
    assert "(reminder)" in reminder.title
    assert "still going on" in reminder.body
    assert "(late)" in late.title
    # A due time on another day than the message shows its date; the hub learned of it the next day.
    assert "15 Jun 2026 10:15:02" in late.body
    assert "learned of it late, at 12:15:02" in late.body


def test_a_kind_the_table_does_not_know_is_still_told_in_general_words() -> None:
    message = render_message(notice(kind="brand_new_rule", severity="warning"))

    assert message.title == "WARNING: brand new rule, Calm room 1"
    assert "Calm room 1" in message.body
    assert "10:15:02" in message.body


def test_an_unknown_timezone_falls_back_to_utc_and_says_so() -> None:
    message = render_message(notice(timezone="Mars/Olympus"))

    assert "09:15:02 (UTC local time)" in message.body


def test_a_notice_has_no_field_for_personal_data() -> None:
    assert {f.name for f in fields(Notice)} == {
        "delivery_id",
        "alert_id",
        "kind",
        "severity",
        "site",
        "room",
        "room_name",
        "site_name",  # the school's name from its site file, on a hub of several schools
        "tier",
        "reason",
        "due_at",
        "raised_at",
        "late",
        "link",
        "timezone",
        "rule",  # the rule's name from our code (a record's step), never free text
        "sent_at",  # when the hub decided to send it
    }
    with pytest.raises(TypeError):
        notice(child_name="anyone")


@pytest.mark.parametrize(
    ("step", "title", "says", "asks"),
    [
        ("record", "record overdue", "The record of an episode in Calm room 1", "Complete the record."),
        ("parent_notice", "parents not yet told", "were to be told of it by", "Tell the parents"),
        ("parent_copy", "parents' written copy overdue", "written copy", "Send the written copy"),
        ("authority_notice", "report to the authority overdue", "report to the authority", "Make the report"),
    ],
)
def test_an_overdue_record_notice_names_the_step_that_is_late_and_what_to_do(
    step: str, title: str, says: str, asks: str
) -> None:
    """A record's steps each have their own deadline and their own `report_overdue`: the notice said
    "the written report ... Complete the record and the report to parents" for all four, so a late
    report to the authority asked for the wrong thing."""
    message = render_message(notice(kind="report_overdue", severity="warning", rule=step))
    assert message.title.startswith(f"WARNING: {title}, Calm room 1")
    assert says in message.body and asks in message.body
    assert "due at 10:15:02 (Europe/London local time)" in message.body or "by 10:15:02" in message.body


def test_an_overdue_record_notice_of_a_step_it_does_not_know_keeps_the_general_words() -> None:
    message = render_message(notice(kind="report_overdue", severity="warning", rule="a-newer-step"))
    assert message.title.startswith("WARNING: report overdue, Calm room 1")


def test_a_notice_with_a_naive_time_is_refused_where_it_is_made() -> None:
    with pytest.raises(ValueError, match="due_at"):
        notice(due_at=dt.datetime(2026, 6, 15, 9, 15))
    with pytest.raises(ValueError, match="severity"):
        notice(severity="urgent")


# ---------------------------------------------------------------------------------------------------
# The dispatcher


class Recorder:
    """The `record` callback: keeps every attempt and lets a test wait for a condition on them."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.cond = threading.Condition()

    def __call__(self, attempt: Attempt) -> None:
        with self.cond:
            self.attempts.append(attempt)
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Attempt]], bool], what: str) -> list[Attempt]:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self.attempts), timeout=WAIT_S):
                pytest.fail(f"waited {WAIT_S} s for {what}; attempts: {self.attempts}")
            return list(self.attempts)

    def on(self, label: str) -> list[Attempt]:
        with self.cond:
            return [a for a in self.attempts if a.channel == label]


class FakeChannel:
    """A channel whose outcomes are scripted: each `fail` entry fails one attempt, then it succeeds."""

    def __init__(self, label: str, fail: int = 0, *, error: Exception | None = None) -> None:
        self.label = label
        self.fail = fail
        self.error = error or DeliveryError("HTTP 503")
        self.sent: list[Notice] = []
        self.calls = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.fail_alert: str | None = None

    def send(self, notice: Notice) -> None:
        self.calls += 1
        self.entered.set()
        if self.gate is not None and not self.gate.wait(WAIT_S):
            raise DeliveryError("gate never opened")
        if self.fail_alert == notice.alert_id:
            raise self.error
        if self.fail > 0:
            self.fail -= 1
            raise self.error
        self.sent.append(notice)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(DUE)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def dispatcher(clock: FakeClock, recorder: Recorder) -> Iterator[Dispatcher]:
    d = Dispatcher(recorder, clock=clock, retry=RetryPolicy(max_attempts=5))
    yield d
    d.stop(timeout=WAIT_S)


def count_is(n: int) -> Callable[[list[Attempt]], bool]:
    return lambda attempts: len(attempts) == n


def after(seconds: float) -> dt.datetime:
    return DUE + dt.timedelta(seconds=seconds)


def step(clock: FakeClock, dispatcher: Dispatcher, seconds: float) -> None:
    """Let `seconds` pass on the fake clock and have the workers look at it."""
    clock.advance(seconds)
    dispatcher.wake()


def test_a_dead_endpoint_is_retried_with_backoff_while_a_healthy_one_is_delivered_at_once(
    http_endpoint: HttpEndpoint, clock: FakeClock, dispatcher: Dispatcher, recorder: Recorder
) -> None:
    # Given a real Apprise channel that works and a real webhook nobody listens on
    healthy = AppriseChannel(f"json://127.0.0.1:{http_endpoint.port}/ok")
    dead = WebhookChannel(f"http://127.0.0.1:{free_port()}/in", SECRET)

    # When a notice goes to both at once
    sent = notice()
    dispatcher.submit(sent, [dead, healthy])

    # Then the healthy one is delivered while the dead one waits for its retry
    recorder.wait_for(lambda a: any(x.channel == healthy.label and x.ok for x in a), "the healthy delivery")
    recorder.wait_for(lambda a: any(x.channel == dead.label for x in a), "the first failed attempt")
    assert len(http_endpoint.requests) == 1
    assert dispatcher.pending() == 1
    [first] = recorder.on(dead.label)
    assert (first.attempt, first.ok, first.gave_up, first.next_retry_at) == (1, False, False, after(1))
    assert first.error
    assert first.delivery_id == sent.delivery_id and first.alert_id == "alert-1"
    [ok] = recorder.on(healthy.label)
    assert (ok.attempt, ok.ok, ok.error, ok.next_retry_at, ok.gave_up) == (1, True, None, None, False)

    # And each retry comes after a longer wait: 1 s, 2 s, 4 s
    step(clock, dispatcher, 1)
    recorder.wait_for(lambda a: len([x for x in a if x.channel == dead.label]) == 2, "the second attempt")
    step(clock, dispatcher, 2)
    recorder.wait_for(lambda a: len([x for x in a if x.channel == dead.label]) == 3, "the third attempt")
    retries = [a.next_retry_at for a in recorder.on(dead.label)]
    assert retries == [after(1), after(3), after(7)]
    assert [a.attempt for a in recorder.on(dead.label)] == [1, 2, 3]
    assert len(http_endpoint.requests) == 1  # the healthy channel was told once, not again


def test_a_channel_that_hangs_never_delays_the_others(dispatcher: Dispatcher, recorder: Recorder) -> None:
    slow, quick = FakeChannel("slow"), FakeChannel("quick")
    slow.gate = threading.Event()

    dispatcher.submit(notice(), [slow, quick])

    recorder.wait_for(lambda a: any(x.channel == "quick" and x.ok for x in a), "the quick delivery")
    assert slow.entered.wait(WAIT_S)
    assert recorder.on("slow") == []  # still stuck in its send
    assert dispatcher.pending() == 1
    slow.gate.set()
    recorder.wait_for(lambda a: any(x.channel == "slow" for x in a), "the slow delivery")


def test_success_after_two_failures_records_three_attempts(
    clock: FakeClock, dispatcher: Dispatcher, recorder: Recorder
) -> None:
    flaky = FakeChannel("flaky", fail=2)

    dispatcher.submit(notice(), [flaky])
    recorder.wait_for(lambda a: len(a) == 1, "attempt 1")
    step(clock, dispatcher, 1)
    recorder.wait_for(lambda a: len(a) == 2, "attempt 2")
    step(clock, dispatcher, 2)
    attempts = recorder.wait_for(lambda a: len(a) == 3, "attempt 3")

    assert [(a.attempt, a.ok, a.error) for a in attempts] == [
        (1, False, "HTTP 503"),
        (2, False, "HTTP 503"),
        (3, True, None),
    ]
    assert [a.at for a in attempts] == [after(0), after(1), after(3)]
    assert [a.next_retry_at for a in attempts] == [after(1), after(3), None]
    assert not any(a.gave_up for a in attempts)
    assert len(flaky.sent) == 1
    assert dispatcher.pending() == 0


def test_a_retry_is_not_taken_before_it_is_due(
    clock: FakeClock, dispatcher: Dispatcher, recorder: Recorder
) -> None:
    flaky = FakeChannel("flaky", fail=1)
    dispatcher.submit(notice(), [flaky])
    recorder.wait_for(lambda a: len(a) == 1, "attempt 1")

    step(clock, dispatcher, 0.5)  # half the backoff: the worker looks, and goes back to waiting
    healthy = FakeChannel("healthy")
    dispatcher.submit(notice(), [healthy])  # a sync point: another worker has run since the wake
    recorder.wait_for(lambda a: any(x.channel == "healthy" for x in a), "the other channel")

    assert flaky.calls == 1
    step(clock, dispatcher, 0.5)
    recorder.wait_for(lambda a: len([x for x in a if x.channel == "flaky"]) == 2, "the retry")


def test_a_delivery_is_given_up_after_the_attempt_limit(
    clock: FakeClock, dispatcher: Dispatcher, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    dead = FakeChannel("dead", fail=100)

    dispatcher.submit(notice(), [dead])
    for n in range(1, 5):
        recorder.wait_for(count_is(n), f"attempt {n}")
        step(clock, dispatcher, 60)
    attempts = recorder.wait_for(lambda a: len(a) == 5, "attempt 5")

    assert [a.gave_up for a in attempts] == [False, False, False, False, True]
    assert attempts[-1].next_retry_at is None
    assert dispatcher.pending() == 0
    assert any("given up" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def test_a_delivery_is_given_up_when_its_retries_would_run_past_the_age_limit(recorder: Recorder) -> None:
    clock = FakeClock(DUE)
    dispatcher = Dispatcher(recorder, clock=clock, retry=RetryPolicy(max_attempts=100, max_age_s=2.5))
    try:
        dispatcher.submit(notice(), [FakeChannel("dead", fail=100)])
        recorder.wait_for(lambda a: len(a) == 1, "attempt 1")
        step(clock, dispatcher, 1)
        attempts = recorder.wait_for(lambda a: len(a) == 2, "attempt 2")
    finally:
        dispatcher.stop(WAIT_S)

    # The third try would be at 3 s, past 2.5 s from the first: the second attempt gives up.
    assert [(a.next_retry_at, a.gave_up) for a in attempts] == [(after(1), False), (None, True)]


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy()

    assert [policy.delay(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_a_retry_waiting_on_one_notice_does_not_hold_back_the_next_on_the_same_channel(
    dispatcher: Dispatcher, recorder: Recorder
) -> None:
    channel = FakeChannel("shared")
    channel.fail_alert = "alert-1"

    dispatcher.submit(notice(alert_id="alert-1"), [channel])
    recorder.wait_for(lambda a: len(a) == 1, "the failed attempt")
    dispatcher.submit(notice(alert_id="alert-2"), [channel])
    attempts = recorder.wait_for(lambda a: len(a) == 2, "the second notice")

    assert (attempts[1].alert_id, attempts[1].ok) == ("alert-2", True)
    assert dispatcher.pending() == 1


def test_the_same_channel_twice_in_one_submit_is_sent_once(
    http_endpoint: HttpEndpoint, dispatcher: Dispatcher, recorder: Recorder
) -> None:
    url = http_endpoint.url("/ok")

    dispatcher.submit(notice(), [WebhookChannel(url, SECRET), WebhookChannel(url, SECRET)])
    recorder.wait_for(lambda a: len(a) == 1, "the delivery")
    dispatcher.stop(WAIT_S)

    assert len(recorder.attempts) == 1
    assert len(http_endpoint.requests) == 1


def test_a_record_callback_that_raises_is_logged_and_the_worker_carries_on(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Attempt] = []

    def record(attempt: Attempt) -> None:
        seen.append(attempt)
        if len(seen) == 1:
            raise RuntimeError("the database is locked")

    dispatcher = Dispatcher(record, clock=clock)
    channel = FakeChannel("c")
    dispatcher.submit(notice(alert_id="alert-1"), [channel])
    dispatcher.submit(notice(alert_id="alert-2"), [channel])
    dispatcher.stop(WAIT_S)

    assert [a.alert_id for a in seen] == ["alert-1", "alert-2"]
    [logged] = [r for r in caplog.records if "recording a notice attempt failed" in r.getMessage()]
    assert "alert-1" in logged.getMessage() and logged.exc_info is not None


def test_a_channel_that_raises_something_unexpected_is_logged_and_retried(
    clock: FakeClock, dispatcher: Dispatcher, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    buggy = FakeChannel("buggy", fail=1, error=KeyError("a bug"))

    dispatcher.submit(notice(), [buggy])
    recorder.wait_for(lambda a: len(a) == 1, "attempt 1")
    step(clock, dispatcher, 1)
    attempts = recorder.wait_for(lambda a: len(a) == 2, "attempt 2")

    assert attempts[0].error == "unexpected error: KeyError"
    assert attempts[1].ok
    assert any("raised unexpectedly" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_channel_whose_label_fails_still_gets_a_worker(dispatcher: Dispatcher, recorder: Recorder) -> None:
    class NoLabel:
        @property
        def label(self) -> str:
            raise RuntimeError("no label")

        def send(self, notice: Notice) -> None:
            pass

    dispatcher.submit(notice(), [NoLabel()])
    [attempt] = recorder.wait_for(lambda a: len(a) == 1, "the delivery")

    assert attempt.ok and attempt.channel == "NoLabel"


def test_cancel_stops_the_retries_of_one_alert_only(
    clock: FakeClock, dispatcher: Dispatcher, recorder: Recorder
) -> None:
    dead = FakeChannel("dead", fail=100)
    dispatcher.submit(notice(alert_id="alert-1"), [dead])
    dispatcher.submit(notice(alert_id="alert-2"), [dead])
    recorder.wait_for(lambda a: len(a) == 2, "both first attempts")

    assert dispatcher.cancel("alert-1") == 1
    assert dispatcher.pending() == 1
    step(clock, dispatcher, 1)
    recorder.wait_for(lambda a: len(a) == 3, "the retry of alert-2")
    dispatcher.stop(WAIT_S)

    assert [a.alert_id for a in recorder.attempts] == ["alert-1", "alert-2", "alert-2"]


def test_a_delivery_taken_up_after_a_restart_numbers_its_attempts_on_and_keeps_its_limits(
    clock: FakeClock, dispatcher: Dispatcher, recorder: Recorder
) -> None:
    # Given a delivery tried twice before the hub stopped (the policy allows 5 attempts)
    dead = FakeChannel("dead", fail=100)
    began = Progress(
        attempts=2, first_at=DUE - dt.timedelta(seconds=3), last_at=DUE - dt.timedelta(seconds=2)
    )

    dispatcher.submit(notice(), [dead], {dead: "row-1"}, {dead: began})
    for n in (1, 2):
        recorder.wait_for(count_is(n), f"attempt {n} since the restart")
        step(clock, dispatcher, 60)
    attempts = recorder.wait_for(count_is(3), "the fifth attempt")

    # Then its attempts are numbered on from 3, and it is given up at the fifth, not the eighth
    assert [(a.attempt, a.gave_up, a.tried) for a in attempts] == [
        (3, False, True),
        (4, False, True),
        (5, True, True),
    ]
    assert dead.calls == 3
    assert dispatcher.pending() == 0


@pytest.mark.parametrize(
    ("began", "why"),
    [
        (Progress(2, DUE - dt.timedelta(hours=2), DUE - dt.timedelta(hours=2)), "s old (the retry limit)"),
        (Progress(0, DUE - dt.timedelta(hours=2)), "s old (the retry limit)"),
        (Progress(5, DUE - dt.timedelta(minutes=5), DUE - dt.timedelta(minutes=4)), "5 attempts made"),
    ],
    ids=["two-hours-old", "never-tried-two-hours-old", "attempts-spent"],
)
def test_a_delivery_taken_up_past_a_retry_limit_is_given_up_unsent(
    dispatcher: Dispatcher, recorder: Recorder, began: Progress, why: str
) -> None:
    dead = FakeChannel("dead")

    dispatcher.submit(notice(), [dead], {dead: "row-1"}, {dead: began})
    [given_up] = recorder.wait_for(count_is(1), "the delivery to be given up")

    assert dead.calls == 0  # a stale alarm is not sent
    assert (given_up.ok, given_up.gave_up, given_up.tried, given_up.ref) == (False, True, False, "row-1")
    assert given_up.attempt == began.attempts and given_up.next_retry_at is None
    assert given_up.error is not None and given_up.error.startswith("not sent") and why in given_up.error
    assert given_up.at == (began.last_at or DUE)
    assert dispatcher.pending() == 0


def test_drop_retries_gives_up_the_retries_of_one_alert_and_leaves_a_first_try(
    clock: FakeClock, dispatcher: Dispatcher, recorder: Recorder
) -> None:
    # Given two alerts' notices waiting for their retries, and one of alert-1's not tried yet
    dead = FakeChannel("dead", fail=100)
    dispatcher.submit(notice(alert_id="alert-1"), [dead], {dead: "a1"})
    dispatcher.submit(notice(alert_id="alert-2"), [dead], {dead: "a2"})
    recorder.wait_for(count_is(2), "both first attempts")
    busy = FakeChannel("busy")
    busy.gate = threading.Event()
    dispatcher.submit(notice(alert_id="alert-0"), [busy])
    assert busy.entered.wait(WAIT_S)
    dispatcher.submit(notice(alert_id="alert-1"), [busy], {busy: "a1-next"})  # queued behind the gate

    # When alert-1 is resolved
    assert dispatcher.drop_retries("alert-1", "resolved") == 1

    # Then its retry is reported given up, unsent; alert-2's goes on; the untried notice keeps its try
    dropped = recorder.wait_for(count_is(3), "the dropped retry")[-1]
    assert (dropped.ref, dropped.attempt, dropped.tried, dropped.gave_up, dropped.error) == (
        "a1",
        1,
        False,
        True,
        "resolved",
    )
    busy.gate.set()
    step(clock, dispatcher, 1)
    recorder.wait_for(lambda a: len(a) == 6, "alert-2's retry and the two gated notices")
    assert [a.alert_id for a in recorder.on("dead")] == ["alert-1", "alert-2", "alert-1", "alert-2"]
    assert [n.alert_id for n in busy.sent] == ["alert-0", "alert-1"]
    assert dead.calls == 3


def test_a_retry_of_a_resolved_alert_being_tried_is_not_retried_after_it(
    dispatcher: Dispatcher, recorder: Recorder
) -> None:
    dead = FakeChannel("dead", fail=100)
    dead.gate = threading.Event()
    dispatcher.submit(notice(alert_id="alert-1"), [dead])
    assert dead.entered.wait(WAIT_S)

    assert dispatcher.drop_retries("alert-1", "the alert was resolved") == 0  # in flight: not in a queue
    dead.gate.set()
    [attempt] = recorder.wait_for(count_is(1), "the attempt in flight")

    assert (attempt.ok, attempt.gave_up, attempt.next_retry_at) == (False, True, None)
    assert attempt.error == "HTTP 503; not retried: the alert was resolved"
    assert dispatcher.pending() == 0


def test_stop_abandons_waiting_retries_and_refuses_new_notices(
    dispatcher: Dispatcher, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher.submit(notice(), [FakeChannel("dead", fail=100)])
    recorder.wait_for(lambda a: len(a) == 1, "attempt 1")

    assert dispatcher.stop(WAIT_S) == 1
    assert dispatcher.pending() == 0
    assert any("abandoned at stop" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    with pytest.raises(DispatcherStopped):
        dispatcher.submit(notice(), [FakeChannel("late")])


def test_stop_still_tries_a_notice_never_tried(dispatcher: Dispatcher, recorder: Recorder) -> None:
    channel = FakeChannel("busy")
    channel.gate = threading.Event()
    dispatcher.submit(notice(alert_id="alert-1"), [channel])
    dispatcher.submit(notice(alert_id="alert-2"), [channel])
    assert channel.entered.wait(WAIT_S)

    stopper = threading.Thread(target=lambda: dispatcher.stop(WAIT_S))
    stopper.start()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:  # wait until stop() has begun: new notices are refused
        try:
            dispatcher.submit(notice(alert_id="probe"), [])
        except DispatcherStopped:
            break
    channel.gate.set()
    stopper.join(WAIT_S)

    assert [n.alert_id for n in channel.sent] == ["alert-1", "alert-2"]
    assert [a.ok for a in recorder.attempts] == [True, True]


def test_stop_gives_up_waiting_after_its_timeout(dispatcher: Dispatcher, recorder: Recorder) -> None:
    channel = FakeChannel("stuck")
    channel.gate = threading.Event()
    dispatcher.submit(notice(alert_id="alert-1"), [channel])
    dispatcher.submit(notice(alert_id="alert-2"), [channel])
    assert channel.entered.wait(WAIT_S)

    try:
        assert dispatcher.stop(timeout=0.2) == 1  # alert-2 never tried; alert-1 still in its send
    finally:
        channel.gate.set()


def test_on_the_real_clock_a_dead_apprise_url_is_retried_then_given_up_and_others_go_at_once(
    http_endpoint: HttpEndpoint, recorder: Recorder
) -> None:
    dead = AppriseChannel(f"json://127.0.0.1:{free_port()}/ok")
    healthy = WebhookChannel(http_endpoint.url("/ok"), SECRET)
    dispatcher = Dispatcher(recorder, retry=RetryPolicy(first_delay_s=0.05, max_delay_s=0.2, max_attempts=3))
    try:
        dispatcher.submit(notice(), [dead, healthy])
        recorder.wait_for(lambda a: any(x.gave_up for x in a), "the dead channel to be given up")
    finally:
        dispatcher.stop(WAIT_S)

    dead_attempts = recorder.on(dead.label)
    assert [(a.attempt, a.ok, a.gave_up) for a in dead_attempts] == [
        (1, False, False),
        (2, False, False),
        (3, False, True),
    ]
    [delivered] = recorder.on(healthy.label)
    assert delivered.ok
    assert delivered.at <= dead_attempts[1].at  # not held back behind the dead channel's retries
    retry_at = [a.next_retry_at for a in dead_attempts[:2]]
    assert retry_at[0] is not None and retry_at[1] is not None and retry_at[0] < retry_at[1]
    assert dead_attempts[1].at >= retry_at[0]
