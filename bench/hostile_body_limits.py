"""Hostile JSON bodies against a live victim: peak RSS and /healthz latency (issue 13.4).

The goal: no request body of at most 64 MB raises the server's RSS by more than 300 MiB or
blocks ``/healthz`` for more than 200 ms. Measured on a real uvicorn victim process (one torch
thread) with redis-server, over loopback:

- the server's peak RSS during each request: the kernel's high-water mark (``VmHWM``) reset
  before the request through ``/proc/PID/clear_refs`` (value 5), minus ``VmRSS`` just before;
- ``/healthz`` latency from a separate prober process (stdlib ``http.client``, one keep-alive
  connection, a request every 10 ms) while the body is uploaded and answered, against the same
  prober on the idle server (the CPU is shared, so the idle figure is the floor).

Bodies: the 25 MB nested-list clip body with one string value (and a 60 MiB one), 100,000
nested brackets, a 1 MiB body of nested brackets (the largest the victim parses whole), a 25 MB
base64 JSON body (well-formed; refused at the clip-count limit) and a 64 MB one just under the
body limit; then the other wire forms near 64 MB: a 60 MiB raw body and a 50 MB gzip of an
incompressible 50 MB ``.npy`` (both decoded, then 429 at the budget, the key having 1 query
left), a 64 MB gzip bomb, and 60 MiB of garbage as ``video/mp4`` and as a multipart file part.
Each is sent ``--repeats`` times. The record goes to ``bench/results/hostile_body_limits.json``
(replaced whole).

    nice -n 10 .venv/bin/python bench/hostile_body_limits.py
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, write_result

from shared.codec import compress, encode_npy
from vidsteal.processes import start_redis, start_victim

ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
MiB = 1 << 20
RSS_LIMIT_MIB = 300
HEALTHZ_LIMIT_MS = 200


def nested_list_clips(size: int) -> bytes:
    """About ``size`` bytes of ``{"clips": [...]}`` nested lists whose last value is a string."""
    one = json.dumps(np.zeros((16, 32, 32, 3), np.uint8).tolist(), separators=(",", ":"))
    body = '{"clips":[' + ",".join([one] * max(1, size // len(one))) + "]}"
    return (body[: -len("0]]]]]}")] + '"x"]]]]]}').encode()


def nested_brackets(depth: int) -> bytes:
    return b'{"clips":' + b"[" * depth + b"]" * depth + b"}"


def base64_clips(size: int) -> bytes:
    """A well-formed base64 JSON body of about ``size`` bytes (uint8 clips 16x32x32x3)."""
    per_clip = 16 * 32 * 32 * 3
    n = max(1, (size * 3 // 4) // per_clip)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (n, 16, 32, 32, 3), dtype=np.uint8)
    payload = {
        "shape": list(data.shape),
        "dtype": "uint8",
        "data": base64.b64encode(data.tobytes()).decode(),
    }
    return json.dumps(payload).encode()


def random_clips(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)


def multipart_garbage(size: int) -> tuple[bytes, dict[str, str]]:
    boundary = "vidsteal-bench-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    body = head + np.random.default_rng(2).bytes(size) + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def gzip_bomb(size: int) -> bytes:
    """About ``size`` bytes of gzip members, each 64 MiB of zeros (about 64 GB in all)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MiB)
    member = b"".join([packer.compress(zeros) for _ in range(64)] + [packer.flush()])
    return member * max(1, size // len(member))


JSON = {"Content-Type": "application/json"}
BIG_CLIPS = (5, 64, 256, 256, 3)  # 60 MiB, within every per-clip limit
Body = tuple[bytes, dict[str, str]]

BODIES: dict[str, Callable[[], Body]] = {
    "json_nested_lists_25MB_one_string": lambda: (nested_list_clips(25 * 1000 * 1000), JSON),
    "json_nested_lists_60MiB_one_string": lambda: (nested_list_clips(60 * MiB), JSON),
    "json_nested_brackets_100k_deep": lambda: (nested_brackets(100_000), JSON),
    "json_nested_brackets_1MiB": lambda: (nested_brackets((MiB - 12) // 2), JSON),
    "json_base64_25MB_valid": lambda: (base64_clips(25 * 1000 * 1000), JSON),
    "json_base64_64MB_valid": lambda: (base64_clips(64 * MiB - 4096), JSON),
    "raw_60MiB_valid": lambda: (
        random_clips(BIG_CLIPS).tobytes(),
        {
            "Content-Type": "application/octet-stream",
            "X-Clip-Shape": ",".join(map(str, BIG_CLIPS)),
            "Idempotency-Key": "bench-raw",  # the attacker always sends one: fingerprinted
        },
    ),
    "gzip_npy_50MB_incompressible": lambda: (
        compress(encode_npy(random_clips((4, 64, 256, 256, 3))), "gzip"),
        {"Content-Type": "application/x-npy", "Content-Encoding": "gzip"},
    ),
    "gzip_bomb_64MB": lambda: (
        gzip_bomb(64 * MiB - 4096),
        {
            "Content-Type": "application/octet-stream",
            "Content-Encoding": "gzip",
            "X-Clip-Shape": "1,16,32,32,3",
        },
    ),
    "video_mp4_60MiB_garbage": lambda: (
        np.random.default_rng(3).bytes(60 * MiB),
        {"Content-Type": "video/mp4"},
    ),
    "multipart_video_60MiB_garbage": lambda: multipart_garbage(60 * MiB),
}


# ------------------------------------------------------------------------------ the prober


def probe(host: str, port: int, out: Path) -> None:
    """Runs in its own process: GET /healthz every 10 ms until stdin closes; latencies in ms."""
    latencies: list[float] = []
    errors = 0
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    print("ready", flush=True)
    while not stop.is_set():
        started = time.perf_counter()
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)
        if ok:
            latencies.append((time.perf_counter() - started) * 1000)
        else:
            errors += 1
        time.sleep(0.01)
    out.write_text(json.dumps({"latencies_ms": latencies, "errors": errors}))


class Prober:
    def __init__(self, port: int, work: Path, name: str) -> None:
        self.out = work / f"probe-{name}.json"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--probe", str(port), str(self.out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def finish(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(60)
        data: dict[str, Any] = json.loads(self.out.read_text())
        lat = data["latencies_ms"]
        return {
            "probes": len(lat),
            "errors": data["errors"],
            "max_ms": round(max(lat), 1) if lat else None,
            "p99_ms": round(percentile(lat, 0.99), 1) if lat else None,
            "p50_ms": round(percentile(lat, 0.5), 1) if lat else None,
        }


# ------------------------------------------------------------------------------ RSS


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """VmRSS every 5 ms: a second view of the peak, in case clear_refs is not allowed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, _status_kib(self.pid, "VmRSS"))
            time.sleep(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kib


# ------------------------------------------------------------------------------ the run


def send(url: str, api_key: str, pid: int, body: Body, work: Path, name: str) -> dict[str, Any]:
    time.sleep(0.3)
    baseline = _status_kib(pid, "VmRSS")
    hwm_reset = reset_peak(pid)
    sampler = RssSampler(pid)
    prober = Prober(int(url.rsplit(":", 1)[1]), work, name)
    time.sleep(0.2)
    started = time.perf_counter()
    response = httpx.post(
        f"{url}/v1/classify",
        content=body[0],
        headers={"Authorization": f"Bearer {api_key}", **body[1]},
        timeout=300,
    )
    seconds = time.perf_counter() - started
    time.sleep(0.3)
    health = prober.finish()
    sampled = sampler.stop()
    peak = _status_kib(pid, "VmHWM") if hwm_reset else sampled
    problem = response.json() if response.status_code >= 400 else {}
    return {
        "status": response.status_code,
        "problem_type": str(problem.get("type", "")).rsplit(":", 1)[-1] or None,
        "detail": str(problem.get("detail", ""))[:160] or None,
        "seconds": round(seconds, 3),
        "rss_before_mib": round(baseline / 1024, 1),
        "rss_increase_mib": round(max(peak, sampled) / 1024 - baseline / 1024, 1),
        "peak_from": "VmHWM after clear_refs" if hwm_reset else "VmRSS sampled every 5 ms",
        "healthz": health,
    }


def idle_healthz(url: str, work: Path, seconds: float) -> dict[str, Any]:
    prober = Prober(int(url.rsplit(":", 1)[1]), work, "idle")
    time.sleep(seconds)
    return prober.finish()


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    redis = start_redis(work / "redis")
    env = {"VIDSTEAL_THREADS": "1"}
    victim = start_victim(
        redis.url, work / "victim.log", admin_token=ADMIN_TOKEN, extra_env=env, timeout_s=600
    )
    pid = victim.process.pid
    try:
        created = httpx.post(
            f"{victim.url}/admin/keys",
            json={"budget": 1, "name": "hostile"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
        created.raise_for_status()
        api_key = created.json()["api_key"]
        idle = idle_healthz(victim.url, work, args.idle_seconds)
        rows: dict[str, Any] = {}
        for name in args.bodies:
            body = BODIES[name]()
            runs = [
                send(victim.url, api_key, pid, body, work, f"{name}-{i}")
                for i in range(args.repeats)
            ]
            worst_rss = max(r["rss_increase_mib"] for r in runs)
            worst_health = max(r["healthz"]["max_ms"] or 0.0 for r in runs)
            rows[name] = {
                "body_bytes": len(body[0]),
                "headers": body[1],
                "runs": runs,
                "worst_rss_increase_mib": worst_rss,
                "worst_healthz_ms": worst_health,
                "within_limits": worst_rss <= RSS_LIMIT_MIB and worst_health <= HEALTHZ_LIMIT_MS,
            }
            print(
                f"{name}: {len(body[0]) / 1e6:.1f} MB -> {runs[0]['status']} "
                f"{runs[0]['problem_type']}, RSS +{worst_rss} MiB, /healthz max "
                f"{worst_health} ms (idle max {idle['max_ms']} ms)",
                flush=True,
            )
        spent = httpx.get(
            f"{victim.url}/v1/budget", headers={"Authorization": f"Bearer {api_key}"}
        ).json()["spent"]
        alive = victim.process.poll() is None
    finally:
        victim.stop()
        redis.stop()
    return {
        "what": "peak server RSS and /healthz latency while hostile JSON bodies are posted",
        "command": " ".join(["bench/hostile_body_limits.py", *sys.argv[1:]]),
        "config": {
            "repeats": args.repeats,
            "victim": "uvicorn, 1 worker, VIDSTEAL_THREADS=1, embedded model, default limits",
            "limits": {"rss_increase_mib": RSS_LIMIT_MIB, "healthz_ms": HEALTHZ_LIMIT_MS},
            "prober": "separate process, GET /healthz every 10 ms on one keep-alive connection",
        },
        "idle_healthz": idle,
        "bodies": rows,
        "key_spent_after_all": spent,
        "worker_alive_after_all": alive,
        "all_within_limits": all(r["within_limits"] for r in rows.values()),
    }


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        probe("127.0.0.1", int(sys.argv[2]), Path(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--bodies", nargs="+", default=list(BODIES), choices=list(BODIES))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidsteal-hostile-") as tmp:
        result = measure(args, Path(tmp))
    if not args.no_write:
        print(write_result("hostile_body_limits", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
