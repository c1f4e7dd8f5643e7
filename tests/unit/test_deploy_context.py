"""What leaves the working tree: the image's build context (.dockerignore) and git
(.gitignore). The dev stack's data and secrets (.keygate/secrets.json), the virtualenv, git
itself, test artifacts and deploy/.env (filled with secrets by hand) must never be in either.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

NEVER_SENT = [
    ".venv/bin/python", ".keygate/secrets.json", ".keygate/pg/PG_VERSION", ".git/config",
    "tests/artifacts/screenshot.png", "tests/unit/test_deploy_files.py", "deploy/.env",
    ".env", "prod.env", "config/.env", "gateway/__pycache__/cli.cpython-311.pyc",
    "config/secrets.json", "bench/results/run.json", "node_modules/x/index.js",
]
SENT = ["pyproject.toml", "README.md", "gateway/cli.py", "gateway/store/migrations/001.sql",
        "admin_ui/templates/keys.html", "sandbox/__init__.py", "config/routes.yaml",
        "config/gateway.yaml"]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it (Go's filepath.Match, plus `**`)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1:end].replace("!", "^", 1) + "]"
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line[1:].strip() if keep else line
        pattern = pattern.strip("/")  # Docker cleans leading and trailing slashes
        rules.append((keep, _pattern_regex(pattern)))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for keep, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not keep
    return verdict


@pytest.fixture(scope="module")
def rules() -> list[tuple[bool, re.Pattern[str]]]:
    return dockerignore_rules((ROOT / ".dockerignore").read_text())


def test_the_matcher_reads_patterns_as_docker_does() -> None:
    rules = dockerignore_rules("*.md\n!README.md\n.venv\n**/secret?.json\n")
    assert excluded("NOTES.md", rules) and not excluded("README.md", rules)
    assert excluded(".venv/lib/x.py", rules)  # a folder takes its contents along
    assert excluded("a/b/secret1.json", rules) and not excluded("a/b/secret10.json", rules)
    assert not excluded("docs/NOTES.md", rules)  # `*` stays within one folder


@pytest.mark.parametrize("path", NEVER_SENT)
def test_secrets_and_clutter_stay_out_of_the_build_context(
        path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> None:
    assert excluded(path, rules), f"{path} would be sent to the Docker daemon"


@pytest.mark.parametrize("path", SENT)
def test_what_the_image_needs_is_sent(path: str,
                                      rules: list[tuple[bool, re.Pattern[str]]]) -> None:
    assert not excluded(path, rules), f"{path} is left out of the build context"


def test_every_copy_in_the_dockerfile_is_in_the_context(
        rules: list[tuple[bool, re.Pattern[str]]]) -> None:
    copied = []
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        words = shlex.split(line) if line.startswith("COPY ") else []
        if words and not any(w.startswith("--from") for w in words):
            copied += [w for w in words[1:-1] if not w.startswith("--")]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not excluded(source, rules), source
        if (ROOT / source).is_dir():  # and what is inside, not only the folder's name
            inner = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / source).rglob("*")
                           if p.is_file() and "__pycache__" not in p.parts)
            assert inner and not [p for p in inner if excluded(p, rules)], source


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=False)


@pytest.mark.parametrize("path", ["deploy/.env", ".env", "deploy/production.env"])
def test_env_files_of_secrets_are_ignored_by_git(path: str) -> None:
    assert _git("check-ignore", "-q", path).returncode == 0, f"git would commit {path}"


def test_the_env_example_stays_tracked() -> None:
    assert _git("check-ignore", "-q", "deploy/env.example").returncode == 1
    assert _git("ls-files", "--error-unmatch", "deploy/env.example").returncode == 0
    assert _git("ls-files", "deploy/.env").stdout == ""
