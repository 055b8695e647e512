"""Key templates: refused unless their keys are unique per (project, frequency, window, format, part) and stay
under the prefix; and whatever a template says, one partition never overwrites or deletes another's objects."""

from __future__ import annotations

import hashlib
import json

import pytest

from exports_pipeline.errors import ConfigError
from exports_pipeline.sinks.object_storage.export import entity_type, export_window
from exports_pipeline.sinks.object_storage.keys import DEFAULT_KEY_TEMPLATE, validate_template
from exports_pipeline.resources.object_store.destination import Destination
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.state.store import StateStore
from exports_pipeline_tests.export.test_blob_export import integration, local_store, request

# The templates the reliability probe found, and what each did before.
LOSSY_TEMPLATES = [
    ("{prefix}{project_id:.1}/{window_start:.4}/part-{part}.{ext}", "format specs"),  # projects shared keys
    ("{prefix}{project_id}/{frequency}/{window_start}/part-{part}.{ext:.0}", "format specs"),  # formats shared
    ("{prefix}{project_id!r}/{frequency}/{window_start}/part-{part}.{ext}", "conversions"),  # quoted keys
    ("{prefix}{project_id}/{frequency}/{window_start}/part-{part:.0}.{ext}", "format specs"),  # failed every run
    ("{prefix}{project_id}/{frequency}/{window_start:>300}/part-{part}.{ext}", "format specs"),  # failed every run
    ("{prefix}{project_id}{part}/{frequency}/{window_start}.{ext}", "same key"),  # p+10 == p1+0
    ("{prefix}{project_id}/{window_start}/part-{part}.{ext}", "same key"),  # hourly 00:00 == daily manifest
    ("{prefix}../{project_id}/{frequency}/{window_start}/{part}.{ext}", "unsafe key"),  # leaves the prefix
    ("{prefix}{project_id}/{frequency}/{window_start}//{part}.{ext}", "segments"),  # empty segment
    ("{prefix}{project_id}/{prefix}{frequency}/{window_start}/{part}.{ext}", "once"),
]


@pytest.mark.parametrize(("template", "needle"), LOSSY_TEMPLATES)
def test_lossy_templates_are_refused(template, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        validate_template(template)
    assert err.value.field == "key_template"


@pytest.mark.parametrize("template", [
    DEFAULT_KEY_TEMPLATE,
    "{prefix}{project_id}/{frequency}/{year}/{month}/{day}/{window_start}/part-{part:05d}.{ext}",
    "{prefix}{project_id}/{window_start}_{window_end}/{format}-{part}.{ext}",
    "{prefix}events/{project_id}/{frequency}/{hour}h/{window_start}-{part:03d}.{ext}",
])
def test_sound_templates_are_accepted(template):
    assert validate_template(template) == template


def test_cli_refuses_a_lossy_template_at_add_and_update(tmp_path, monkeypatch, capsys):
    from exports_pipeline.cli import main
    from exports_pipeline.settings import get_settings

    monkeypatch.setenv("EXPORTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ENCRYPTION_KEY", "7a" * 32)
    monkeypatch.delenv("EXPORTS_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        out = tmp_path / "out"
        out.mkdir()
        base = ["integrations", "add-blob", "--project", "p1", "--destination", f"file://{out}/",
                "--frequency", "daily", "--format", "csv", "--mode", "full_history"]
        assert main([*base, "--key-template", LOSSY_TEMPLATES[0][0]]) == 2
        assert "--key-template" in capsys.readouterr().err
        assert main(base) == 0
        assert main(["integrations", "update", "--project", "p1", "--key-template", LOSSY_TEMPLATES[6][0]]) == 2
        assert "--key-template" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()


def _manifest_matches_files(root, manifest_key: str) -> dict:
    manifest = json.loads((root / manifest_key).read_bytes())
    for f in manifest["files"]:
        data = (root / f["key"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f["bytes"], f["sha256"]), f["key"]
    return manifest


def test_a_run_never_overwrites_another_partitions_objects_whatever_the_template(seeded, tmp_path):
    """Two templates that each pass validation but collide across integrations (a prefix that spells the
    other project's folder): the second run refuses before writing and the first export stays whole."""
    state = StateStore(database_url=f"sqlite:///{tmp_path / 'state.db'}")
    root = tmp_path / "bucket"
    root.mkdir()
    store = local_store(root)
    # proj-1's keys: "proj-2/proj-1/events/daily/<w>/part-00000.jsonl" (prefix "proj-2/" + default template)
    first = integration(str(root), prefix="proj-2/")
    prefixed = ObjectStoreResource().open(Destination(scheme="file", bucket=str(root), prefix="proj-2/"))
    one = export_window(seeded, prefixed, first, request(), state=state)
    mkey = one.manifest_uri.split(str(root) + "/", 1)[1]
    before = _manifest_matches_files(root, mkey)
    rows_before = state.list_event_log("proj-1")

    # proj-2 with prefix "" and a template that renders "proj-2/proj-1/events/..." for its own windows.
    other = integration(str(root), project_id="proj-2",
                        key_template="{prefix}{project_id}/proj-1/events/{frequency}/{window_start}_{window_end}/"
                                     "part-{part:05d}.{ext}")
    with pytest.raises(ConfigError, match="belongs to 2026-11-02\\|proj-1") as err:
        export_window(seeded, store, other, request(project="proj-2"), state=state)
    assert err.value.field == "key_template"
    assert _manifest_matches_files(root, mkey) == before  # not overwritten, not deleted
    assert state.list_event_log("proj-1") == rows_before
    assert state.list_event_log("proj-2", entity_type("daily")) == []
