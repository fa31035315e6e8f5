"""`/metrics` in the Prometheus text format: queue gauges, job counters, duration histograms."""

from __future__ import annotations

from collections.abc import Iterable

from taskmaster.engine import metrics
from taskmaster.engine.jobs import JobClient
from taskmaster.engine.listing import queue_stats

_COUNTER_NAMES = {"submitted": "submitted", "started": "started", "completed": "completed",
                  "failed": "failed", "retry_scheduled": "retried",
                  "dead_lettered": "dead_lettered", "cancelled": "cancelled"}


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


async def exposition(jobs: JobClient) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples)

    stats = await queue_stats(jobs)
    family("taskmaster_queue_jobs", "gauge", "Jobs per queue and state.", [
        f"taskmaster_queue_jobs{_labels(queue=s.name, state=state)} {value}"
        for s in stats for state, value in (
            *((f"queued_{level.value.lower()}", n) for level, n in s.queued.items()),
            ("active", s.active), ("scheduled", s.scheduled),
            ("dead_lettered", s.dead_lettered))])
    tallies = await metrics.totals(jobs.redis, [s.name for s in stats])
    for counter, public in _COUNTER_NAMES.items():
        family(f"taskmaster_jobs_{public}_total", "counter", f"Jobs {public.replace('_', ' ')}.", [
            f"taskmaster_jobs_{public}_total"
            f"{_labels(queue=q, function=f, version=v)} {t.counts.get(counter, 0)}"
            for (q, f, v), t in sorted(tallies.items()) if t.counts.get(counter)])
    for kind, help_text in (("wait", "From submission to the first attempt's start."),
                            ("run", "How long attempts ran.")):
        name = f"taskmaster_job_{kind}_seconds"
        samples = []
        for (q, f, v), tally in sorted(tallies.items()):
            rows = tally.cumulative(kind)
            if rows[-1][1] == 0:
                continue
            for bound, count in rows:
                le = bound if bound == "+Inf" else repr(int(bound) / 1000)
                samples.append(f"{name}_bucket{_labels(queue=q, function=f, version=v, le=le)}"
                               f" {count}")
            samples.append(f"{name}_sum{_labels(queue=q, function=f, version=v)}"
                           f" {tally.sums_ms[kind] / 1000}")
            samples.append(f"{name}_count{_labels(queue=q, function=f, version=v)} {rows[-1][1]}")
        family(name, "histogram", help_text, samples)
    return "\n".join(lines) + "\n"
