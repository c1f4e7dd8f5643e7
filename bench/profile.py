"""Where a server's time goes under load: py-spy samples it while wrk drives it.

py-spy writes collapsed stacks (`--format raw`); they are summed here into the functions with
the most samples on top of the stack (self) and anywhere on it (inclusive), and also drawn
as a flame graph (`--format flamegraph`) for a look by eye.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import PeakResult, run_wrk

__all__ = ["Profile", "profile_under_load", "summarise_collapsed"]

# Frames that are the event loop and the interpreter driving it, not the work itself.
_IDLE = ("select (selectors.py", "_run_once (asyncio", "run_forever (asyncio", "<module>",
         "run (asyncio", "run_until_complete (asyncio", "_run (asyncio/events.py",
         "_run_until_signal (gateway/edge/server.py", "_worker (", "main (", "_bootstrap",
         "_launch",
         "run (multiprocessing", "start (multiprocessing", "__init__ (multiprocessing",
         "_Popen (multiprocessing", "cmd_serve (", "_run_code (", "_run_module_as_main (",
         "_supervise (", "<lambda> (gateway/cli.py")


@dataclass
class Profile:
    samples: int
    self_top: list[tuple[str, float]] = field(default_factory=list)  # (function, share)
    inclusive_top: list[tuple[str, float]] = field(default_factory=list)
    load: PeakResult | None = None
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "self_top": [{"function": f, "share": round(s, 4)} for f, s in self.self_top],
            "inclusive_top": [{"function": f, "share": round(s, 4)}
                              for f, s in self.inclusive_top],
            "load": self.load.as_dict() if self.load else None,
            "files": self.files,
        }

    def render(self, top: int = 20) -> str:
        lines = [f"{self.samples} samples"]
        lines.append("  self (on top of the stack):")
        lines += [f"    {share:6.1%}  {name}" for name, share in self.self_top[:top]]
        lines.append("  inclusive (anywhere on the stack):")
        lines += [f"    {share:6.1%}  {name}" for name, share in self.inclusive_top[:top]]
        return "\n".join(lines)


def _shown(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    root = Path(__file__).resolve().parent.parent
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _short(frame: str) -> str:
    """`func (/long/path/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py:12)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    else:
        parts = Path(where).parts
        where = "/".join(parts[-2:])
    return f"{name} ({where})"


def summarise_collapsed(text: str, top: int = 30) -> Profile:
    """Self and inclusive shares of the busy samples (idle loop waits excluded)."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        # Skip the thread/process header frames py-spy adds, and idle waits in the selector.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames or frames[-1].startswith("select ("):
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            if not frame.startswith(_IDLE):
                inclusive[frame] += count
    if not total:
        return Profile(0)
    return Profile(
        total,
        [(name, n / total) for name, n in self_counts.most_common(top)],
        [(name, n / total) for name, n in inclusive.most_common(top)],
    )


def profile_under_load(pid: int, url: str, out: Path, *, duration: float, connections: int,
                       headers: Mapping[str, str] | None = None,
                       cpus: Collection[int] | None = None) -> Profile:
    """Sample `pid` for `duration` seconds while wrk (on `cpus`) loads `url`; files go next
    to `out`."""
    beside = Path(sys.executable).parent / "py-spy"  # installed in the venv (dev extra)
    py_spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("py-spy is not installed (pip install -e '.[dev]')")
    loaded: list[PeakResult] = []
    load = threading.Thread(target=lambda: loaded.append(run_wrk(
        url, connections=connections, duration=duration + 2, headers=headers, cpus=cpus)))
    load.start()
    raw = out.with_suffix(".collapsed.txt")
    svg = out.with_suffix(".svg")
    try:
        subprocess.run([py_spy, "record", "--pid", str(pid), "--duration", str(round(duration)),
                        "--rate", "250", "--nonblocking", "--function", "--format", "raw",
                        "--output", str(raw)], check=True, capture_output=True)
    finally:
        load.join()
    profile = summarise_collapsed(raw.read_text())
    profile.load = loaded[0] if loaded else None
    profile.files = [_shown(raw)]
    # A flame graph of the same load, for reading by eye.
    load = threading.Thread(target=lambda: run_wrk(url, connections=connections,
                                                   duration=min(duration, 5) + 2,
                                                   headers=headers, cpus=cpus))
    load.start()
    try:
        done = subprocess.run([py_spy, "record", "--pid", str(pid), "--duration",
                               str(round(min(duration, 5))), "--rate", "250", "--nonblocking",
                               "--format", "flamegraph", "--output", str(svg)],
                              check=False, capture_output=True)
        if done.returncode == 0:
            profile.files.append(_shown(svg))
    finally:
        load.join()
    return profile
