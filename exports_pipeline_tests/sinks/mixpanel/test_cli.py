"""`exports-pipeline integrations add-mixpanel` and Mixpanel's validate, in process, against a real SQLite state
database and the local receiver."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from exports_pipeline.commands import open_state
from exports_pipeline.commands.integrations_mixpanel import public_row, validate_project
from exports_pipeline.crypto import SecretBox
from exports_pipeline.settings import get_settings
from exports_pipeline_tests.cli_harness import cli_in
from exports_pipeline_tests.mixpanel_peers import SA_PROJECT_ID, SA_SECRET, SA_USER, TOKEN

KEY = "6f" * 32


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    with cli_in(tmp_path, monkeypatch, capsys, key=KEY,
                unset=("EXPORTS_MIXPANEL_PROJECT_TOKEN", "EXPORTS_MIXPANEL_SECRET")) as runner:
        yield runner


def test_add_with_token_from_env_then_validate_passes(cli, monkeypatch, mixpanel_peer, capsys):
    monkeypatch.setenv("EXPORTS_MIXPANEL_PROJECT_TOKEN", TOKEN)
    code, out, err = cli("integrations", "add-mixpanel", "--project", "proj-1", "--region", "api-eu",
                         "--endpoint", mixpanel_peer.url)
    assert code == 0, err
    assert TOKEN not in out and f"{mixpanel_peer.url}/import?strict=1" in out
    saved = open_state(get_settings()).get_mixpanel_integration("proj-1")
    assert SecretBox(KEY).decrypt(saved.encrypted_mixpanel_project_token) == TOKEN
    assert (saved.mixpanel_region, saved.endpoint) == ("api-eu", mixpanel_peer.url)
    assert validate_project("proj-1", get_settings()) == 0
    assert capsys.readouterr().out.startswith("PASS ")
    assert not mixpanel_peer.received.events and len(mixpanel_peer.received.requests) == 1  # nothing imported
    row = public_row(saved)
    assert row["secret"] == "****" and saved.encrypted_mixpanel_project_token not in str(row)


def test_add_service_account_with_secret_on_stdin(cli, monkeypatch, mixpanel_peer, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(SA_SECRET + "\n"))
    code, out, err = cli("integrations", "add-mixpanel", "--project", "proj-2", "--region", "api",
                         "--service-account-username", SA_USER, "--mixpanel-project-id", SA_PROJECT_ID,
                         "--secret-stdin", "--endpoint", mixpanel_peer.url)
    assert code == 0, err
    assert SA_SECRET not in out and f"project_id={SA_PROJECT_ID}" in out
    assert validate_project("proj-2", get_settings()) == 0
    assert mixpanel_peer.received.requests[0]["query"]["project_id"] == SA_PROJECT_ID


def test_validate_names_the_exact_cause(cli, monkeypatch, mixpanel_peer, capsys):
    """A wrong token: FAIL with Mixpanel's 401 and its words, exit 1, the token never printed."""
    monkeypatch.setenv("EXPORTS_MIXPANEL_PROJECT_TOKEN", "wrong-token-123")
    assert cli("integrations", "add-mixpanel", "--project", "p", "--region", "api", "--endpoint",
               mixpanel_peer.url)[0] == 0
    assert validate_project("p", get_settings()) == 1
    err = capsys.readouterr().err
    assert err.startswith("FAIL 401") and "Invalid credentials" in err and "wrong-token-123" not in err


def test_generic_commands_with_kind_mixpanel(cli, monkeypatch, mixpanel_peer):
    """list, update, disable, enable, validate and remove through the kind registry (--kind mixpanel)."""
    monkeypatch.setenv("EXPORTS_MIXPANEL_PROJECT_TOKEN", TOKEN)
    assert cli("integrations", "add-mixpanel", "--project", "p", "--region", "api-in")[0] == 0
    code, out, err = cli("integrations", "list", "--json")
    assert code == 0 and json.loads(out)[0]["region"] == "api-in" and TOKEN not in out
    code, out, err = cli("integrations", "update", "--project", "p", "--kind", "mixpanel", "--endpoint",
                         mixpanel_peer.url)
    assert code == 0, err
    assert open_state(get_settings()).get_mixpanel_integration("p").endpoint == mixpanel_peer.url
    code, out, err = cli("integrations", "validate", "--project", "p")
    assert code == 0 and out.startswith("PASS"), err
    assert cli("integrations", "disable", "--project", "p")[0] == 0
    assert open_state(get_settings()).get_mixpanel_integration("p").enabled is False
    assert cli("integrations", "enable", "--project", "p", "--kind", "mixpanel")[0] == 0
    code, out, err = cli("integrations", "update", "--project", "p", "--frequency", "daily")
    assert code == 2 and "object-storage" in err
    assert cli("integrations", "remove", "--project", "p")[0] == 0
    assert open_state(get_settings()).get_mixpanel_integration("p") is None


@pytest.mark.parametrize("args, env, message", [
    (["--region", "api-us"], {"EXPORTS_MIXPANEL_PROJECT_TOKEN": TOKEN}, "--region must be one of api, api-eu, api-in"),
    (["--region", "api"], {}, "project token is missing"),
    (["--region", "api", "--service-account-username", "u"], {"EXPORTS_MIXPANEL_SECRET": "s"},
     "--mixpanel-project-id must be"),
    (["--region", "api", "--service-account-username", "u", "--mixpanel-project-id", "7"], {}, "secret is missing"),
    (["--region", "api", "--token-stdin", "--service-account-username", "u"], {}, "not both"),
    (["--region", "api", "--endpoint", "ftp://user:pw-secret@x"], {"EXPORTS_MIXPANEL_PROJECT_TOKEN": TOKEN},
     "--endpoint must be an http(s) URL"),
    (["--region", "api", "--token-stdin"], {"EXPORTS_MIXPANEL_PROJECT_TOKEN": TOKEN}, "one way only"),
])
def test_invalid_options_are_refused_naming_the_flag(cli, monkeypatch, args, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = cli("integrations", "add-mixpanel", "--project", "p", *args)
    assert code == 2 and message in err and "pw-secret" not in err
    assert open_state(get_settings()).get_mixpanel_integration("p") is None
