"""The one way to show a URL in a message: `mask_url`, and `scrub_secrets` for text that may quote one.

Its own module, not a helper of `settings` or of the object-store destination, because every layer
quotes URLs (settings, the ClickHouse resource, destinations, the state engine, the CLI) and none of
them should import another just to hide a password.

Masking never parses: the URL to be shown is, by definition, often one that does not parse. A password
holding `/`, `#`, `?`, `@` or `:` (AWS secrets hold `/`) makes `urlsplit` read part of it as the port,
path, query or fragment, so a parser-based masker prints it in clear exactly when the operator has made
a typo. Instead the userinfo runs from after `scheme://` to the LAST `@` of the whole string: this may
hide more than the userinfo (an `@` later in a path or query), never less. Query parameters whose name
says secret (`password`, `token`, `X-Amz-Signature`, `access_key`...) lose their value too, so a
presigned URL or a DSN with `?password=` is safe to quote.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

_AUTHORITY_START = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# A parameter whose name contains one of these words is a secret (X-Amz-Credential, X-Amz-Security-Token,
# X-Amz-Signature, sig, access_key, secret_key, api_key, password, pwd, sslpassword, token, auth...).
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[^=&;#?]*?)(?:pass|pwd|secret|token|key|sig|credential|auth)[^=&;#?]*=)(?P<value>[^&;#]*)",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A URL quoted inside free text (a driver's error message): scheme:// up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def mask_url(url: object) -> str:
    """`url` fit for a message or a log line: any password, and secret query values, replaced by `***`.

    Works on any input, parseable or not (see the module docstring); control characters are shown
    escaped (`\\x00`) so that a message stays one line.
    """
    text = str(url)
    shown, end = [], 0
    for start, stop in sorted(_secret_spans(text)):  # their union: one kind of secret may hold the other
        if stop <= end:
            continue
        if start >= end:
            shown += [text[end:start], MASK]
        end = stop
    shown.append(text[end:])
    return _CONTROL.sub(lambda c: f"\\x{ord(c.group()):02x}", "".join(shown))


def _secret_spans(text: str) -> list[tuple[int, int]]:
    """(start, stop) of the password (from after the userinfo's first `:` to the last `@`) and of each
    secret query value, all found in the original text, so that neither kind can hide the other."""
    spans = [(p.start("value"), p.end("value")) for p in _SECRET_PARAM.finditer(text) if p["value"]]
    start = m.end() if (m := _AUTHORITY_START.match(text)) else 0
    at = text.rfind("@", start)
    colon = text.find(":", start, at) if at >= 0 else -1
    if colon >= 0 and at > colon + 1:
        spans.append((colon + 1, at))
    return spans


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries (its password, raw and percent-decoded; secret query values), longest
    first, for scrubbing them out of text that quotes them without the URL around them. The pieces of the
    password between `/ # ? @ :` are included: a parser that misreads the URL quotes one of them alone
    (Python's "Port could not be cast to integer value as 'piece'")."""
    found: set[str] = set()
    start = m.end() if (m := _AUTHORITY_START.match(url)) else 0
    at = url.rfind("@", start)
    if at >= 0:
        _user, colon, password = url[start:at].partition(":")
        if colon and password:
            found.update((password, unquote(password)))
            found.update(piece for piece in re.split(r"[/#?@:]", password) if len(piece) >= 3)
    found.update(p["value"] for p in _SECRET_PARAM.finditer(url) if p["value"])
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub_secrets(text: str, *urls: str) -> str:
    """`text` (an error message from a driver) with the secrets of `urls` and any URL it quotes masked."""
    for url in urls:
        for secret in url_secrets(url):
            text = text.replace(secret, MASK)
    return _URL_IN_TEXT.sub(lambda u: mask_url(u.group()), text)
