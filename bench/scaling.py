"""Scaling: the full default pipeline with 1 and with 2 workers, in alternating rounds.

Measured: requests/s and CPU us/req of `gateway serve --workers N` (supervisor and workers).
Argued: N cores / CPU per request, the requests/s N workers would reach with a core each and
the load generator elsewhere. On a 2-core machine the load generator and the upstream share
the cores with the two workers, so the measured figure says more about the machine than
about the gateway; the argued one is the figure, and the output says which is which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.contenders import Contender, Stage
from bench.peak import PeakPlan, PeakRun, measure_round, turned

__all__ = ["ScalingRun", "run_scaling"]


@dataclass
class ScalingRun:
    """One worker count's rounds, with what they imply."""

    workers: int
    peak: PeakRun
    shares_load_cpu: bool  # the workers ran beside the load generator and the upstream

    @property
    def argued_rps(self) -> float:
        """Requests/s of `workers` cores, each fully busy, at the measured CPU per request."""
        return self.workers * 1e6 / self.peak.cpu_us_per_request

    def as_dict(self) -> dict[str, object]:
        return {"workers": self.workers, **self.peak.as_dict(),
                "argued_rps": round(self.argued_rps, 1),
                "shares_load_cpu": self.shares_load_cpu}


def run_scaling(stage: Stage, workers_list: Sequence[int], plan: PeakPlan) -> list[ScalingRun]:
    """The rate-limited gateway (the full default pipeline) at each worker count."""
    contenders: dict[int, Contender] = {}
    for workers in workers_list:
        if workers == 1:
            contenders[workers] = stage.contender("gateway_limits")
        else:
            stage.say(f"  starting the gateway with rate limits, {workers} workers")
            server = stage.gateway(f"gateway-limits-w{workers}", workers=workers,
                                   rate_limits=True)
            contenders[workers] = Contender(f"gateway_limits_w{workers}", server,
                                            processes=workers)
    try:
        runs = {w: PeakRun(c.key, f"gateway, rate limits on, {w} worker(s)", w)
                for w, c in contenders.items()}
        for contender in contenders.values():
            measure_round(stage, contender, plan.warmup, plan.connections)
        order = [str(w) for w in workers_list]
        for round_ in range(plan.rounds):
            for text in turned(order, round_):
                result, cpu_us = measure_round(stage, contenders[int(text)], plan.seconds,
                                               plan.connections)
                runs[int(text)].rounds.append(result)
                runs[int(text)].cpu_us.append(cpu_us)
        results = [ScalingRun(w, runs[w], stage.cpus.shares_load_cpu(w)) for w in workers_list]
    finally:
        for workers, contender in contenders.items():
            if workers != 1:
                contender.server.stop()
    for run in results:
        stage.say(f"  {run.workers} worker(s): measured {run.peak.rps:8.0f} req/s, "
                  f"CPU {run.peak.cpu_us_per_request:6.1f} us/req; argued "
                  f"{run.argued_rps:8.0f} req/s ({run.workers} core(s) / CPU per request)"
                  + ("  (beside the load generator)" if run.shares_load_cpu else "")
                  + (f"  ERRORS {run.peak.errors}" if run.peak.errors else ""))
    return results
