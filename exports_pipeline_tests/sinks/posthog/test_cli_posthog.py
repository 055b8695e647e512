"""`exports-pipeline integrations ... ` for PostHog, in process, against SQLite state and the test receiver."""

from __future__ import annotations

import io
import json

import pytest

from exports_pipeline.crypto import SecretBox
from exports_pipeline_tests.cli_harness import cli_in
from exports_pipeline_tests.posthog_peers import API_KEY, Fault
from exports_pipeline_tests.test_cli_integrations import KEY, add_local


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    with cli_in(tmp_path, monkeypatch, capsys, key=KEY,
                unset=("EXPORTS_CLICKHOUSE_URL", "EXPORTS_SECRET_ACCESS_KEY", "EXPORTS_POSTHOG_API_KEY")) as runner:
        yield runner


@pytest.fixture
def with_key(monkeypatch):
    monkeypatch.setenv("EXPORTS_POSTHOG_API_KEY", API_KEY)


def add(cli, project: str, host: str, *extra: str):
    return cli("integrations", "add-posthog", "--project", project, "--host", host, *extra)


def test_add_list_update_disable_enable_remove(cli, with_key, monkeypatch, posthog_peer):
    code, out, err = add(cli, "shop", posthog_peer.url + "/", "--project-name", "Shop (prod)")
    assert (code, err) == (0, ""), err
    saved = cli.state.get_posthog_integration("shop")
    assert saved.posthog_host_name == posthog_peer.url and saved.project_name == "Shop (prod)" and saved.enabled
    assert SecretBox(KEY).decrypt(saved.encrypted_posthog_api_key) == API_KEY
    code, out, _ = cli("integrations", "list", "--json")
    assert json.loads(out) == [{"project": "shop", "kind": "posthog", "host": posthog_peer.url,
                                "project_name": "Shop (prod)", "enabled": True, "export_source": "EVENTS",
                                "last_sync_at": None, "last_error": None, "last_error_at": None,
                                "api_key": "phc_****"}]
    code, out, _ = cli("integrations", "list")
    assert code == 0 and "posthog" in out and "phc_****" in out

    monkeypatch.setenv("EXPORTS_POSTHOG_API_KEY", "phc_rotated")
    code, out, _ = cli("integrations", "update", "--project", "shop", "--host", "https://eu.i.posthog.com")
    assert code == 0 and "posthog_host_name" in out and "api key (replaced)" in out
    saved = cli.state.get_posthog_integration("shop")
    assert saved.posthog_host_name == "https://eu.i.posthog.com"
    assert SecretBox(KEY).decrypt(saved.encrypted_posthog_api_key) == "phc_rotated"

    assert cli("integrations", "disable", "--project", "shop")[0] == 0
    assert cli.state.get_posthog_integration("shop").enabled is False
    cli.state.record_posthog_error("shop", "HTTP 401")
    code, out, _ = cli("integrations", "enable", "--project", "shop")
    assert code == 0 and "cleared its last error" in out
    assert cli.state.get_posthog_integration("shop").last_error is None
    code, out, _ = cli("integrations", "remove", "--project", "shop", "--kind", "posthog")
    assert code == 0 and cli.state.get_posthog_integration("shop") is None
    assert "phc_rotated" not in cli.transcript and API_KEY not in cli.transcript


def test_key_from_stdin_and_bad_inputs(cli, monkeypatch, posthog_peer):
    monkeypatch.delenv("EXPORTS_POSTHOG_API_KEY", raising=False)
    code, _, err = add(cli, "p", posthog_peer.url)
    assert code == 2 and "EXPORTS_POSTHOG_API_KEY" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("phx_personal_secret\n"))
    code, _, err = add(cli, "p", posthog_peer.url, "--api-key-stdin")
    assert code == 2 and "phc_" in err and "phx_personal_secret" not in err
    for host in ("ftp://x", "eu.i.posthog.com", "https://user:pw@x.example", "https://x.example/?a=1"):
        monkeypatch.setattr("sys.stdin", io.StringIO(API_KEY + "\n"))
        code, _, err = add(cli, "p", host, "--api-key-stdin")
        assert code == 2 and err.startswith("exports-pipeline: --host") and "pw" not in err, (host, err)
    monkeypatch.setattr("sys.stdin", io.StringIO(API_KEY + "\n"))
    assert add(cli, "p", posthog_peer.url, "--api-key-stdin")[0] == 0
    assert SecretBox(KEY).decrypt(cli.state.get_posthog_integration("p").encrypted_posthog_api_key) == API_KEY
    code, _, err = add(cli, "p", posthog_peer.url, "--api-key-stdin")
    assert code == 2 and "already has a PostHog integration" in err


def test_kind_is_needed_only_when_a_project_has_several(cli, with_key, posthog_peer, tmp_path):
    assert add(cli, "both", posthog_peer.url)[0] == 0
    assert add_local(cli, "both", tmp_path / "b")[0] == 0
    for command in ("disable", "enable", "remove", "validate"):
        code, out, err = cli("integrations", command, "--project", "both")
        assert code == 2 and out == "" and "--kind" in err and "blob" in err and "posthog" in err, command
    code, _, err = cli("integrations", "update", "--project", "both", "--kind", "blob", "--host", "https://x.example")
    assert code == 2 and "--host applies to PostHog integrations" in err
    code, _, err = cli("integrations", "update", "--project", "both", "--kind", "posthog", "--frequency", "hourly")
    assert code == 2 and "--frequency applies to object-storage integrations" in err
    assert cli("integrations", "disable", "--project", "both", "--kind", "posthog")[0] == 0
    assert cli.state.get_posthog_integration("both").enabled is False
    assert cli.state.get_blob_integration("both").enabled is True
    code, out, _ = cli("integrations", "list", "--json")
    assert sorted(r["kind"] for r in json.loads(out)) == ["blob", "posthog"]
    code, out, _ = cli("integrations", "list")
    assert code == 0 and "file://" in out and posthog_peer.url in out
    code, _, err = cli("integrations", "enable", "--project", "none-such", "--kind", "posthog")
    assert code == 2 and "no PostHog integration" in err


def test_validate_passes_with_the_key_and_sends_no_event(cli, with_key, posthog_peer):
    assert add(cli, "v", posthog_peer.url)[0] == 0
    code, out, err = cli("integrations", "validate", "--project", "v")
    assert (code, err) == (0, "") and out.startswith("PASS ") and "no event was sent" in out
    assert posthog_peer.flag_checks == 1 and posthog_peer.attempts == [] and posthog_peer.events == {}


def test_validate_names_the_exact_cause(cli, monkeypatch, posthog_peer):
    monkeypatch.setenv("EXPORTS_POSTHOG_API_KEY", "phc_not_the_right_one")
    assert add(cli, "v", posthog_peer.url)[0] == 0
    code, out, err = cli("integrations", "validate", "--project", "v")
    assert code == 1 and out == "" and "FAIL HTTP 401" in err and "refused the project API key" in err
    assert "phc_not_the_right_one" not in err
    posthog_peer.plan(Fault(status=503))
    code, _, err = cli("integrations", "validate", "--project", "v")
    assert code == 1 and "FAIL HTTP 503" in err
    cli.state.upsert_posthog_integration(
        cli.state.get_posthog_integration("v").__class__(
            **{**cli.state.get_posthog_integration("v").__dict__, "posthog_host_name": "http://no-such-host.invalid"}))
    code, _, err = cli("integrations", "validate", "--project", "v")
    assert code == 1 and "FAIL NameResolution" in err and "does not resolve" in err
