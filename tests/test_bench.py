"""`taskmaster bench`: a small run of one scenario, on its own embedded Valkey."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fixtures.server import base_env


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskmaster", "-q", "bench", *args],
                          env=base_env(), capture_output=True, text=True, timeout=100)


def test_one_scenario_measures_both_engines_with_ratios(tmp_path: Path) -> None:
    done = bench("--quick", "--only", "enqueue", "--output", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["environment"]["cpus"] >= 1
    assert results["environment"]["store"].startswith(("valkey ", "redis "))
    figures = {f["name"]: f for f in results["figures"]}
    assert set(figures) == {"enqueue one by one (100 in flight)",
                            "bulk, Python API (1,000 per call)"}, "only the chosen scenario"
    for figure in figures.values():
        assert figure["taskmaster"]["median"] > 0 and figure["saq"]["median"] > 0
        assert figure["ratio"] == figure["taskmaster"]["median"] / figure["saq"]["median"]
    assert "enqueue one by one (100 in flight)" in done.stdout and "raw SAQ" in done.stdout


def test_an_unknown_scenario_is_refused() -> None:
    done = bench("--only", "everything")
    assert done.returncode == 2
    assert "no scenario 'everything'" in done.stderr and "drain" in done.stderr


def test_drain_measures_one_and_two_worker_processes_and_what_the_second_adds(
        tmp_path: Path) -> None:
    done = bench("--quick", "--only", "drain", "--output", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    figures = {f["name"]: f for f in json.loads((tmp_path / "r.json").read_text())["figures"]}
    for kind, rate_of in (("no-op jobs", "drain (first 99%), {}"),
                          ("CPU-bound jobs", "drain of CPU-bound jobs (first 99%), {}")):
        one = figures[rate_of.format("1 worker process")]
        two = figures[rate_of.format("2 worker processes")]
        added = figures[f"drain of {kind}: 2 worker processes ÷ 1"]
        for engine in ("taskmaster", "saq"):
            assert one[engine]["median"] > 0 and two[engine]["median"] > 0
            assert added[engine]["median"] == two[engine]["median"] / one[engine]["median"]
    for workers in ("1 worker process", "2 worker processes"):
        assert figures[f"duplicate executions, {workers}"]["taskmaster"]["max"] == 0
