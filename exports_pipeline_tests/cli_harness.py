"""`main()` run in process as the console script runs it, for the CLI tests of every module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

from exports_pipeline.cli import main
from exports_pipeline.commands import open_state
from exports_pipeline.settings import get_settings
from exports_pipeline.state.store import StateStore


class Cli:
    """Runs `main()` like the console script, settings read afresh for each command as a new process
    would (a test may change the environment between commands), and remembers every byte it printed."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home = home
        self.capsys = capsys
        self.transcript = ""

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        get_settings.cache_clear()
        code = main(list(argv))
        out, err = self.capsys.readouterr()
        self.transcript += out + err
        return code, out, err

    @property
    def state(self) -> StateStore:
        return open_state(get_settings())  # creates EXPORTS_HOME when no command has yet


@contextlib.contextmanager
def cli_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *, key: str,
           unset: Iterable[str] = (), env: Mapping[str, str] | None = None) -> Iterator[Cli]:
    """A `Cli` whose EXPORTS_HOME is under `tmp_path`, with ENCRYPTION_KEY `key`, the state database in
    that home (EXPORTS_DATABASE_URL unset), `unset` removed and `env` set."""
    home = tmp_path / "home"
    monkeypatch.setenv("EXPORTS_HOME", str(home))
    monkeypatch.setenv("ENCRYPTION_KEY", key)
    for name in ("EXPORTS_DATABASE_URL", *unset):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        yield Cli(home, capsys)
    finally:
        StateStore(database_url=get_settings().database_url).dispose()
        get_settings.cache_clear()
