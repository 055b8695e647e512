"""One URL mask for every message: a table of hostile URLs goes through every place that quotes a URL
(the settings loader, the CLI, destinations, the ClickHouse resource, the state engine), and no piece of
the secret ever comes out."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from exports_pipeline.cli import main
from exports_pipeline.errors import ConfigError
from exports_pipeline.resources.clickhouse import ClickHouseError, ClickHouseResource
from exports_pipeline.resources.object_store.destination import Destination, validate_endpoint_url
from exports_pipeline.settings import Settings, SettingsError, get_settings
from exports_pipeline.state.engine import StateDatabaseError, dispose_engine
from exports_pipeline.state.store import StateStore
from exports_pipeline.urls import mask_url, scrub_secrets

# Every character that breaks a parser-based masker, between pieces that appear nowhere else.
SECRET = "Zq7v/Kx9#Wm3?Pt5@Rb8:Hn2"
PIECES = re.split(r"[/#?@:]", SECRET)
QUERY_SECRET = SECRET.replace("#", "")  # a raw '#' ends a query string: no query value can hold one
DEAD = "127.0.0.1:1"  # nothing listens on port 1: connections are refused at once

HOSTILE = [
    f"http://user:{SECRET}@{DEAD}/db",
    f"https://user:{SECRET}@ch.example.com:8443/db",
    f"http://user:{quote(SECRET, safe='')}@{DEAD}/db",
    f"http://:{SECRET}@{DEAD}/db",
    f"user:{SECRET}@{DEAD}/db",
    f"postgresql+psycopg2://u:{quote(SECRET, safe='')}@{DEAD}/db",
    f"postgresql+psycopg2://u:{SECRET}@{DEAD}/db",
    f"postgresql://u:{SECRET}@h/db",
    f"mysql://u:{SECRET}@h/db",
    f"s3://AKIA:{SECRET}@bucket/prefix/",
    f"file://u:{SECRET}@host/dir/",
    f"https://AKIA:{SECRET}@minio.local:9000",
    f"https://bucket.s3.amazonaws.com/key?X-Amz-Credential={quote(SECRET, safe='')}&X-Amz-Signature={QUERY_SECRET}",
    f"postgresql+psycopg2://u@{DEAD}/db?password={quote(SECRET, safe='')}",
    f"http://[::1/db?token={QUERY_SECRET}",
    f"http://user:{SECRET}@h/db?password={QUERY_SECRET}&compress=false",
    f"http://user:{SECRET}\n@{DEAD}/db",
]


def assert_no_secret(text: str) -> None:
    leaked = [piece for piece in PIECES if piece in text] + [quote(SECRET, safe="")] * (quote(SECRET, safe="") in text)
    assert not leaked, f"{leaked} in {text!r}"


def messages_for(url: str, tmp_path) -> list[str]:
    """What every URL-quoting place says about `url`: an error message, or the repr of what it built."""
    out: list[str] = [mask_url(url)]
    for name in ("EXPORTS_CLICKHOUSE_URL", "EXPORTS_DATABASE_URL"):
        try:
            out.append(repr(Settings.from_env({"EXPORTS_HOME": str(tmp_path), name: url})))
        except SettingsError as exc:
            out.append(str(exc))
    for build in (lambda: Destination.from_url(url), lambda: validate_endpoint_url(url),
                  lambda: Destination(scheme="s3", bucket="bucket", endpoint_url=url)):
        try:
            out.append(repr(build()))
        except (ConfigError, ValueError) as exc:
            out.append(str(exc))
    if url.startswith("http"):
        try:
            ClickHouseResource(url=url, connect_timeout=2).query("SELECT 1")
            out.append("connected")
        except ClickHouseError as exc:
            out.append(str(exc))
    if url.startswith("postgresql+psycopg2://"):
        try:
            StateStore(database_url=url).list_blob_integrations()
            out.append("connected")
        except StateDatabaseError as exc:
            out.append(str(exc))
        finally:
            dispose_engine(url)
    return out


@pytest.mark.parametrize("url", HOSTILE)
def test_no_message_quotes_any_piece_of_the_secret(url, tmp_path):
    said = messages_for(url, tmp_path)
    assert len(said) >= 6
    for text in said:
        assert_no_secret(text)
        assert "\n" not in text


def test_the_mask_keeps_what_is_not_secret():
    assert mask_url("https://user:topsecret@ch:8443/db") == "https://user:***@ch:8443/db"
    assert mask_url(f"http://user:{SECRET}@ch:8123/db?compress=false") == "http://user:***@ch:8123/db?compress=false"
    assert mask_url("http://ch:8123/db") == "http://ch:8123/db"
    assert mask_url("s3://bucket/team@example.com/") == "s3://bucket/team@example.com/"
    assert mask_url("sqlite:////var/lib/exports/state.db") == "sqlite:////var/lib/exports/state.db"
    assert mask_url("https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&partNumber=2") == \
        "https://b.s3.amazonaws.com/k?X-Amz-Signature=***&partNumber=2"
    assert scrub_secrets(f"port 'Kx9' of http://a:b@h in {SECRET}", f"http://u:{SECRET}@h") == \
        "port '***' of http://a:***@h in ***"


def test_invalid_clickhouse_url_message_names_the_variable_and_the_fix(tmp_path):
    """Issue 7: a password holding / # ? made "not a valid URL" print the URL (and Python's port error) in clear."""
    for char in "/#?":
        url = f"http://user:pa{char}Zq7vss@ch:8123/db"
        with pytest.raises(SettingsError) as err:
            Settings.from_env({"EXPORTS_HOME": str(tmp_path), "EXPORTS_CLICKHOUSE_URL": url})
        text = str(err.value)
        assert text.startswith("EXPORTS_CLICKHOUSE_URL='http://user:***@ch:8123/db'") and "percent-encoded" in text
        assert "Zq7v" not in text and "pa" not in text.replace("password", "")


def test_cli_prints_the_masked_url_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXPORTS_HOME", str(tmp_path))
    monkeypatch.setenv("EXPORTS_CLICKHOUSE_URL", f"http://user:{SECRET}@ch:8123/db")
    get_settings.cache_clear()
    try:
        assert main(["db", "upgrade"]) == 2
    finally:
        get_settings.cache_clear()
    out, err = capsys.readouterr()
    assert_no_secret(out + err)
    assert err.count("\n") == 1 and "EXPORTS_CLICKHOUSE_URL" in err and "user:***@ch:8123" in err
