"""The docker compose range's secrets, made on its first start (the `secrets` service).

    python -m vidsteal.compose_secrets --dir DIR init [--owner UID] [--owner NAME=UID]
    python -m vidsteal.compose_secrets --dir DIR show NAME

``init`` gives every secret in ``SECRETS`` a file in DIR (a named volume in compose), mode
0600, owned by ``--owner`` (a default uid, or ``NAME=UID`` for one file). A file that exists
is kept; a missing one is generated; a value set in the environment (``.env``, under the
variable that ``SECRETS`` names) is an override and is written over the file. It prints what
it did to each name, never a value. ``show NAME`` prints one value, for the user who asks.

Standard library only: compose runs it in a bare Python image, before any service that reads
the files (`VIDSTEAL_ADMIN_TOKEN_FILE`, `api_key_file`, `GF_SECURITY_ADMIN_PASSWORD__FILE`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Secret:
    name: str  # the file's name in DIR
    variable: str  # environment variable that overrides it
    generate: Callable[[], str]


SECRETS: tuple[Secret, ...] = (
    Secret("admin_token", "VIDSTEAL_ADMIN_TOKEN", lambda: secrets.token_hex(24)),
    # vsk_<key id>_<secret>: the key ids name the keys in metrics and logs.
    Secret("api_key", "VIDSTEAL_API_KEY", lambda: f"vsk_attack_{secrets.token_hex(24)}"),
    Secret("eval_api_key", "VIDSTEAL_EVAL_API_KEY", lambda: f"vsk_eval_{secrets.token_hex(24)}"),
    Secret("grafana_admin_password", "GRAFANA_ADMIN_PASSWORD", lambda: secrets.token_hex(16)),
)
BY_NAME = {secret.name: secret for secret in SECRETS}

Action = Literal["generated", "kept", "overridden"]


def _write(path: Path, value: str, owner: int | None) -> None:
    """Write ``value`` to ``path`` atomically, mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, value.encode("utf-8"))
        os.fsync(fd)
        if owner is not None:
            os.fchown(fd, owner, owner)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_secrets(
    directory: Path,
    *,
    environ: dict[str, str] | None = None,
    owners: dict[str, int] | None = None,
    default_owner: int | None = None,
) -> dict[str, Action]:
    """Make every secret's file in ``directory``; returns what was done to each name."""
    environ = dict(os.environ) if environ is None else environ
    owners = owners or {}
    unknown = set(owners) - set(BY_NAME)
    if unknown:
        raise ValueError(f"no such secret: {', '.join(sorted(unknown))}")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # each file is 0600 and owned by its reader
    done: dict[str, Action] = {}
    for secret in SECRETS:
        path = directory / secret.name
        owner = owners.get(secret.name, default_owner)
        override = environ.get(secret.variable, "").strip()
        current = path.read_text(encoding="utf-8").strip() if path.exists() else None
        if override and override != current:
            _write(path, override, owner)
            done[secret.name] = "overridden"
        elif current:
            if owner is not None and path.stat().st_uid != owner:
                os.chown(path, owner, owner)
            path.chmod(0o600)
            done[secret.name] = "kept"
        else:
            _write(path, secret.generate(), owner)
            done[secret.name] = "generated"
    return done


def read_secret(directory: Path, name: str) -> str:
    if name not in BY_NAME:
        raise ValueError(f"no such secret {name!r} (have: {', '.join(BY_NAME)})")
    return (directory / name).read_text(encoding="utf-8").strip()


def _owner_option(text: str) -> tuple[str | None, int]:
    name, sep, uid = text.rpartition("=")
    return (name if sep else None), int(uid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidsteal.compose_secrets")
    parser.add_argument("--dir", type=Path, required=True, help="where the secret files live")
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="make missing secrets, apply overrides from the env")
    init.add_argument(
        "--owner",
        action="append",
        default=[],
        type=_owner_option,
        metavar="[NAME=]UID",
        help="owner of every file (UID) or of one (NAME=UID); repeatable",
    )
    show = commands.add_parser("show", help="print one secret")
    show.add_argument("name", choices=list(BY_NAME))
    args = parser.parse_args(argv)

    if args.command == "show":
        try:
            print(read_secret(args.dir, args.name))
        except FileNotFoundError:
            print(
                f"{args.dir / args.name} does not exist yet: start the range once", file=sys.stderr
            )
            return 1
        return 0
    owners = {name: uid for name, uid in args.owner if name is not None}
    defaults = [uid for name, uid in args.owner if name is None]
    try:
        done = ensure_secrets(
            args.dir, owners=owners, default_owner=defaults[-1] if defaults else None
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, action in done.items():
        note = f" from {BY_NAME[name].variable}" if action == "overridden" else ""
        print(f"{name}: {action}{note} ({args.dir / name})")
    print("read one with: docker compose run --rm secrets show NAME")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
