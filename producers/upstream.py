"""What every Stocktwits HTTP client (Firehose, REST pollers) shares: the error a retry cannot
fix, and the check that an upstream URL can carry basic-auth credentials from the settings."""

from __future__ import annotations

from pulse.settings import redact_url


class FatalUpstreamError(RuntimeError):
    """The upstream refused us for a reason a retry cannot fix (401, 406)."""


def userinfo_error(variable: str, url: str) -> str | None:
    """Why ``url`` cannot be used with basic auth from the settings, or None if it can.

    aiohttp refuses a request with both an Authorization header and ``user:password@`` in the
    URL; say so at start, naming the variable, instead of a traceback on the first request.
    """
    authority = url.partition("://")[2].split("/", 1)[0]
    if "@" not in authority:
        return None
    return (
        f"{variable} ({redact_url(url)}) holds user info; put the credentials in "
        "PULSE_FIREHOSE_USERNAME / PULSE_FIREHOSE_PASSWORD instead"
    )
