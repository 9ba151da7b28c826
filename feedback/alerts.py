"""One Sentry event when an account's complaint or hard-bounce rate crosses its line.

Gmail and Yahoo's sender rules (2024) punish a spam complaint rate over 0.3%; a hard-bounce
rate over a few percent means a list gone stale. Checked after each new complaint or hard
bounce, over the last 24 hours of the account (store.feedback.rates), once there are
``MIN_SENT`` recipients to judge by; at most one event per account, rate and day.
"""

from __future__ import annotations

import logging

import redis

from mailworker.observe.sentry import report
from mailworker.settings import Settings
from mailworker.store import keys
from mailworker.store.feedback import rates

log = logging.getLogger("mailworker.feedback")

MIN_SENT = 100  # a complaint among 20 messages says little
ALERT_EVERY = 24 * 3600


def check_rates(account: str, settings: Settings, client: redis.Redis) -> list[str]:
    """Alert on the rates over their lines; which alerts were sent now."""
    found = rates([account], client=client)[account]
    if found["sent"] < MIN_SENT:
        return []
    policy, sent = settings.feedback, int(found["sent"])
    lines = [
        ("complaint_rate", found["complaint_rate"], policy.complaint_rate_alert, "complained"),
        ("hard_bounce_rate", found["hard_bounce_rate"], policy.bounce_rate_alert, "hard"),
    ]
    alerted = []
    for name, rate, line, counter in lines:
        if rate <= line:
            continue
        if not client.set(keys.account(account, f"alerted:{name}"), "1", nx=True, ex=ALERT_EVERY):
            continue  # told already today
        message = (f"account {account}: {name.replace('_', ' ')} {rate:.2%} over 24 hours is "
                   f"above {line:.2%} ({int(found[counter])} of {sent} recipients)")  # fmt: skip
        log.warning(message)
        report(name, message, account=account, level="warning")
        alerted.append(name)
    return alerted
