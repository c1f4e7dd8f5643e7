"""`python -m bench.run`: its arguments are checked before anything starts, and the streams
part is a hook that finds bench/streams.py or says it is not there."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from bench import run


def test_unknown_parts_are_refused_before_anything_starts(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--parts", "peak,nonsense", "--no-setup"]) == 2
    assert "unknown part(s): nonsense" in capsys.readouterr().err


def test_unknown_contenders_and_bad_workers_are_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--contenders", "haproxy", "--no-setup"]) == 2
    assert "unknown contender(s): haproxy" in capsys.readouterr().err
    assert run.main(["--workers", "one", "--no-setup"]) == 2
    assert "--workers takes numbers" in capsys.readouterr().err


def test_help_works(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        run.main(["--help"])
    assert exit_.value.code == 0
    assert "--parts" in capsys.readouterr().out


def test_streams_missing_is_said_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bench.streams", None)  # import fails as if absent
    said: list[str] = []
    assert run._streams(said.append, {"quick": True}) is None
    assert said == ["streams: bench/streams.py not present"]


def test_streams_run_gets_the_arguments_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    module = types.ModuleType("bench.streams")

    def fake_run(workdir: object, *, quick: bool, say: object) -> str:
        seen.update(workdir=workdir, quick=quick, say=say)
        return "streams: ok"

    module.run = fake_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.streams", module)
    offered = {"workdir": "w", "database_url": "db", "quick": True, "say": print}
    assert run._streams(print, offered) == "streams: ok"
    assert seen == {"workdir": "w", "quick": True, "say": print}


def test_streams_run_with_keywords_gets_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("bench.streams")
    module.run = lambda **kwargs: sorted(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.streams", module)
    assert run._streams(print, {"a": 1, "b": 2}) == ["a", "b"]
