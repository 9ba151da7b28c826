"""A small app, written as a user of mailworker would, for the capture fixture's tests."""

from __future__ import annotations

from mailworker import send_email


def reset_password(address: str, code: str) -> str:
    """Email a one-time code: urgent, and worthless after ten minutes."""
    result = send_email.delay(
        to=address,
        subject="Your reset code",
        text=f"Your code is {code}.",
        html=f"<p>Your code is <b>{code}</b>.</p>",
        priority="high",
        expires_in=600,
        tags={"kind": "reset"},
    )
    return str(result.id)


def welcome(name: str, address: str) -> str:
    result = send_email.delay(
        to=f"{name} <{address}>",
        from_email="Zoë's Shop <shop@example.com>",
        subject=f"Welcome, {name}",
        text=f"Hello {name}, welcome to the shop.",
    )
    return str(result.id)
