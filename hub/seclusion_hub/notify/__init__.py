"""Notifications: what a notice says, the channels it goes out through, and the delivery engine.

No FastAPI, SQLModel or paho here: the service builds `Notice`s from its alerts, picks the channels of a
tier with `channels_for`, and hands both to a `Dispatcher`, which records every attempt through a
callback. docs/notifications.md describes the channels, the webhook signature and the retries.
"""

from __future__ import annotations

from .channels import (
    DEFAULT_TIMEOUT_S,
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    AppriseChannel,
    Channel,
    ChannelError,
    DeliveryError,
    WebhookChannel,
    channels_for,
    sign,
    verify_signature,
    webhook_payload,
)
from .dispatch import Attempt, Dispatcher, DispatcherStopped, Progress, RetryPolicy
from .notice import WORDING, Message, Notice, Reason, Severity, Wording, new_delivery_id, render_message

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "WORDING",
    "AppriseChannel",
    "Attempt",
    "Channel",
    "ChannelError",
    "DeliveryError",
    "Dispatcher",
    "DispatcherStopped",
    "Message",
    "Notice",
    "Progress",
    "Reason",
    "RetryPolicy",
    "Severity",
    "WebhookChannel",
    "Wording",
    "channels_for",
    "new_delivery_id",
    "render_message",
    "sign",
    "verify_signature",
    "webhook_payload",
]
