"""Which CPUs the load side and the contenders run on.

The load side (wrk or h2load, the upstream nginx, this benchmark itself) takes the first CPU
this process may use; a one-process contender takes the next one, alone. A contender of N
workers takes the N CPUs after the first when there are that many, else every CPU: then it
shares one with the load side, and its measured requests/s say less than its CPU time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["CpuPlan"]


@dataclass(frozen=True)
class CpuPlan:
    """CPUs by role; `pinned` False runs everything anywhere (`--no-pin`)."""

    available: tuple[int, ...]
    pinned: bool = True

    @classmethod
    def of_this_process(cls, *, pinned: bool = True) -> CpuPlan:
        available = tuple(sorted(os.sched_getaffinity(0)))
        return cls(available, pinned and len(available) >= 2)

    @property
    def load(self) -> frozenset[int] | None:
        """The load generators' and the upstream's CPU."""
        return frozenset(self.available[:1]) if self.pinned else None

    def contender(self, processes: int = 1) -> frozenset[int] | None:
        """A contender's CPUs: `processes` of its own when there are enough, else all."""
        if not self.pinned:
            return None
        rest = self.available[1:]
        if len(rest) >= processes:
            return frozenset(rest[:processes])
        return frozenset(self.available)

    def shares_load_cpu(self, processes: int) -> bool:
        """Whether a contender of `processes` workers runs beside the load side."""
        cpus = self.contender(processes)
        return not self.pinned or cpus is None or bool(cpus & (self.load or frozenset()))

    def describe(self, processes: int = 1) -> str:
        if not self.pinned:
            return "not pinned"
        load, mine = self.load or frozenset(), self.contender(processes) or frozenset()
        return (f"load generator and upstream on CPU {_cpus(load)}, "
                f"contender on CPU {_cpus(mine)}")


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))
