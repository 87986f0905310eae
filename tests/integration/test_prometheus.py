"""Debian's real `prometheus` scraping a real victim with the range's scrape config.

deploy/prometheus/prometheus.yml is the one source of truth: compose mounts it as is, and this
test runs it with the targets pointed at 127.0.0.1 ports and a 1 s scrape interval. Skipped only
when the prometheus package is not installed (`make setup` installs it).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from helpers.services import LiveVictim, free_port
from helpers.victim import clips, create_key, npy_request

REPO = Path(__file__).resolve().parents[2]
SCRAPE_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "vidsteal.json"
# Values Grafana substitutes for the dashboard's variables, for checking its queries here.
DASHBOARD_VARIABLES = {
    "$__rate_interval": "4s",
    "$__range": "1m",
    "$key_id": ".*",
    "$route": ".*",
    "$delta": "0.85",
}

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Debian's prometheus package is not installed (make setup / apt-get install prometheus)",
)


def scrape_config(targets: dict[str, str], scrape_interval: str = "1s") -> dict[str, Any]:
    """The repository's scrape config with each job's targets replaced (job name -> host:port)."""
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"]["scrape_interval"] = scrape_interval
    config["global"]["scrape_timeout"] = scrape_interval
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(targets), f"scrape jobs are {sorted(jobs)}"
    for name, target in targets.items():
        for static in jobs[name]["static_configs"]:
            static["targets"] = [target]
    return config


@contextmanager
def running_prometheus(config: dict[str, Any], workdir: Path) -> Iterator[str]:
    """prometheus on a free 127.0.0.1 port with its storage in ``workdir``; yields its URL and
    stops it with SIGTERM (clean shutdown) on the way out."""
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        for _ in range(400):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        yield url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
    assert process.returncode == 0, (
        f"prometheus exited {process.returncode}:\n{log_path.read_text()}"
    )


async def _query(client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/query", params={"query": expr})
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def _wait_for(
    client: httpx.AsyncClient, expected: dict[str, float], timeout_s: float = 30.0
) -> dict[str, float | None]:
    """Poll instant queries until each gives its expected value (bounded in time and count)."""
    seen: dict[str, float | None] = {}
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.25) + 1):
        for expr in expected:
            result = await _query(client, expr)
            seen[expr] = float(result[0]["value"][1]) if len(result) == 1 else None
        if seen == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    return seen


def test_scrape_config_is_valid_for_promtool() -> None:
    result = subprocess.run(
        ["promtool", "check", "config", str(SCRAPE_CONFIG)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_prometheus_scrapes_budget_and_queries_of_a_live_victim(
    live_victim: LiveVictim, tmp_path: Path
) -> None:
    victim_address = urlsplit(live_victim.url).netloc
    assert victim_address.startswith("127.0.0.1:")
    async with httpx.AsyncClient(base_url=live_victim.url, timeout=60) as client:
        key = await create_key(client, budget=10, name="prometheus-test")
        for start in (0, 2, 4):  # 3 requests of 2 clips: 6 accepted, 4 left
            response = await client.post(
                "/v1/classify", **npy_request(clips(2, start=start), key["api_key"])
            )
            assert response.status_code == 200, response.text

    # The attacker job points at a closed local port: scraped as down, which is what compose
    # sees before and after an attack run.
    config = scrape_config({"victim": victim_address, "attacker": f"127.0.0.1:{free_port()}"})
    with running_prometheus(config, tmp_path) as prometheus_url:
        async with httpx.AsyncClient(base_url=prometheus_url, timeout=10) as prometheus:
            key_id = key["key_id"]
            remaining = f'vidsteal_budget_remaining{{key_id="{key_id}"}}'
            accepted = f'vidsteal_queries_total{{key_id="{key_id}", outcome="accepted"}}'
            seen = await _wait_for(prometheus, {remaining: 4.0, accepted: 6.0})
            assert seen == {remaining: 4.0, accepted: 6.0}

            targets = (await prometheus.get("/api/v1/targets")).json()["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
            assert health["victim"] == "up"
            (victim_target,) = [t for t in targets if t["labels"]["job"] == "victim"]
            assert victim_target["labels"]["component"] == "victim"

            # Every query of the Grafana dashboard is valid PromQL for this Prometheus.
            dashboard = json.loads(DASHBOARD.read_text())
            exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
            assert len(exprs) > 20
            names = sorted(DASHBOARD_VARIABLES, key=len, reverse=True)
            for expr in exprs:
                for name in names:
                    expr = expr.replace(name, DASHBOARD_VARIABLES[name])
                assert not re.search(r"\$\w", expr), f"unknown dashboard variable in {expr}"
                await _query(prometheus, expr)
            # ...and the budget panel shows the key the victim reported.
            budget_panel = next(
                p for p in dashboard["panels"] if p["title"] == "Budget remaining per key"
            )
            expr = budget_panel["targets"][0]["expr"].replace("$key_id", key_id)
            (series,) = await _query(prometheus, expr)
            assert series["metric"] == {"key_id": key_id} and series["value"][1] == "4"
