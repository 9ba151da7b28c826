"""Settings: one frozen object from the environment; every bad value names its variable."""

from __future__ import annotations

import dataclasses

import pytest

from mailworker.settings import SettingsError, load_settings, parse_smtp_url


def test_accounts_are_read_from_smtp_url_variables_and_credentials_percent_decoded() -> None:
    settings = load_settings(
        {
            "SMTP_URL": "smtp+starttls://me%40corp.example:p%40ss%3Aw%2Frd@smtp.example:587",
            "SMTP_URL_BULK": "smtps://bulk:secret@bulk.example",
            "SMTP_URL_RELAY": "smtp://relay.internal",
        }
    )
    default = settings.account("default")
    assert (default.host, default.port, default.security) == ("smtp.example", 587, "starttls")
    assert default.username == "me@corp.example"
    assert default.password is not None and default.password.get_secret_value() == "p@ss:w/rd"
    assert settings.account("bulk").port == 465 and settings.account("bulk").security == "tls"
    assert settings.account("relay").username is None


def test_settings_are_frozen_and_never_show_the_password() -> None:
    settings = load_settings({"SMTP_URL": "smtps://u:TopSecret42@h"})
    assert "TopSecret42" not in repr(settings) and "TopSecret42" not in str(settings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.redis_url = "redis://elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("environ", "variable", "words"),
    [
        ({"SMTP_URL": "smtp://user:pw@relay:25"}, "SMTP_URL", "plaintext"),
        ({"SMTP_URL_BULK": "http://h"}, "SMTP_URL_BULK", "unsupported scheme"),
        ({"SMTP_URL": "smtps://u:p@h:notaport"}, "SMTP_URL", "port"),
        ({"SMTP_URL": "smtps://u:p@h?max_connections=zero"}, "SMTP_URL", "not a number"),
        ({"SMTP_URL": "smtps://u:p@h?colour=blue"}, "SMTP_URL", "unknown query"),
        ({"SMTP_URL": "smtps://u:p@h?pipelining=maybe"}, "SMTP_URL", "pipelining=on or off"),
        ({"SMTP_URL": "smtps://u:p@h?tls_verify=no"}, "SMTP_URL", "tls_verify=on or off"),
        ({"SMTP_URL": "smtp://relay?tls_verify=off"}, "SMTP_URL", "no TLS to verify"),
        ({"SMTP_TIMEOUT": "soon"}, "SMTP_TIMEOUT", "number"),
        ({"SMTP_TIMEOUT": "-1"}, "SMTP_TIMEOUT", "greater than 0"),
        ({"SMTP_CA_FILE": "/no/such/file.pem"}, "SMTP_CA_FILE", "not a readable file"),
        ({"DEFAULT_FROM_EMAIL": "not-an-address"}, "DEFAULT_FROM_EMAIL", "@"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL", "redis://"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(
    environ: dict[str, str], variable: str, words: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert words in str(caught.value)


def test_pool_options_come_from_query_parameters() -> None:
    account = parse_smtp_url("SMTP_URL", "smtps://u:p@h?max_connections=2&max_messages=50")
    assert account.pool.max_connections == 2 and account.pool.max_messages == 50
    assert account.pool.idle_check < 10  # providers drop idle sessions after about 10 s
    assert account.pipelining  # on by default, used only where the server advertises it
    assert not parse_smtp_url("SMTP_URL", "smtps://u:p@h?pipelining=off").pipelining


def test_unknown_account_names_the_variable_to_set() -> None:
    with pytest.raises(SettingsError, match="SMTP_URL_MARKETING"):
        load_settings({}).account("marketing")


def test_rediss_url_with_cert_reqs_is_accepted() -> None:
    url = "rediss://:pw@redis.example:6380/0?ssl_cert_reqs=none"
    assert load_settings({"REDIS_URL": url}).redis_url == url


def test_rediss_urls_verify_certificates_unless_told_otherwise() -> None:
    verified = load_settings({"REDIS_URL": "rediss://:pw@redis.example:6380/0"})
    assert verified.redis_url.endswith("?ssl_cert_reqs=required")
    heroku = load_settings(
        {"REDIS_URL": "rediss://:pw@ec2.example:6380", "REDIS_SSL_CERT_REQS": "none"}
    )
    assert heroku.redis_url == "rediss://:pw@ec2.example:6380?ssl_cert_reqs=none"
    given = "rediss://h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem"
    assert load_settings({"REDIS_URL": given}).redis_url == given
    assert load_settings({"REDIS_URL": "redis://h:6379/0"}).redis_url == "redis://h:6379/0"


def test_sentinel_urls_name_their_master() -> None:
    url = "sentinel://:pw@10.0.0.1:26379;sentinel://10.0.0.2:26380/2?master_name=mymaster"
    assert load_settings({"REDIS_URL": url}).redis_url == url
    with pytest.raises(SettingsError) as error:
        load_settings({"REDIS_URL": "sentinel://10.0.0.1:26379"})
    assert error.value.variable == "REDIS_URL" and "master_name" in str(error.value)
    from mailworker.settings.redis_url import sentinel_parts

    parts = sentinel_parts(url)
    assert parts.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (parts.master_name, parts.db, parts.password) == ("mymaster", 2, "pw")
    assert parts.broker_url == url.split("?")[0]
