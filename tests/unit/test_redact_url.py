"""settings.redact_url: one redaction for every URL in a log line, an error or a record."""

from __future__ import annotations

import logging

import pytest

from pulse.schemas.serde import HTTP_LOGGERS, RedactUrls
from pulse.settings import Settings, redact_url


@pytest.mark.parametrize(
    "url, shown",
    [
        ("http://user:pass@host:8081/apis/ccompat/v7", "http://***@host:8081/…"),
        ("https://hooks.slack.com/services/T0/B0/XXXX", "https://hooks.slack.com/…"),
        ("https://h.example/hook?token=abc", "https://h.example/…"),
        ("https://h.example/#frag", "https://h.example/…"),
        ("https://h.example/", "https://h.example"),
        ("http://h:99999/x", "http://h:99999/…"),  # a port urllib refuses: still no crash
        ("http://h:port/x", "http://h:port/…"),
        ("hooks.example.com/T/secret", "hooks.example.com/…"),  # no scheme
        ("user:pw@host", "***@host"),
        ("http://u:p/ss@host/x", "http://***@host/…"),  # an unescaped "/" in a password
        ("http://u:p?s#s@h:1", "http://***@h:1"),
        ("http://[::1]:8080/x", "http://[::1]:8080/…"),
        ("HTTPS://Host/x", "https://Host/…"),
        ("http://h\x1b[31m\n/x", "http://h?[31m?/…"),  # no terminal or log-line injection
        ("", ""),
        ("   ", ""),
        ("://", ":"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("odd", [None, 12, b"http://u:p@h/", object(), "a" * 100_000, "@" * 50])
def test_redact_url_never_raises_and_never_grows_without_bound(odd: object) -> None:
    out = redact_url(odd)  # type: ignore[arg-type]
    assert isinstance(out, str) and len(out) < 300
    assert "u:p" not in out


def test_settings_repr_redacts_url_user_info() -> None:
    text = repr(Settings(schema_registry_url="http://reg:hunter2@r:8081/apis/ccompat/v7"))
    assert "hunter2" not in text and "http://***@r:8081/…" in text


def test_the_registry_clients_http_log_is_quiet_and_redacted() -> None:
    for name in HTTP_LOGGERS:
        logger = logging.getLogger(name)
        assert logger.level >= logging.WARNING
        assert any(isinstance(f, RedactUrls) for f in logger.filters)
    record = logging.LogRecord(
        "httpx2", logging.INFO, __file__, 1, 'HTTP Request: %s %s "%s %d %s"',
        ("GET", "http://reg:hunter2@r:8081/subjects", "HTTP/1.1", 200, "OK"), None,
    )  # fmt: skip
    assert RedactUrls().filter(record)
    assert record.getMessage() == 'HTTP Request: GET http://***@r:8081/… "HTTP/1.1 200 OK"'
