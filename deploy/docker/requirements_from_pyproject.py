"""Print the requirements of one of the project's extras, read from pyproject.toml.

The Dockerfiles install these before copying the source tree, so a code change does not
reinstall PyTorch; the pins stay in pyproject.toml alone. Self-references such as
``vidsteal[torch]`` are expanded. Standard library only (runs in a bare Python 3.11 image).

    python requirements_from_pyproject.py pyproject.toml victim > requirements.txt
    python requirements_from_pyproject.py pyproject.toml victim --only torch,torchvision
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirements(pyproject: Path, extra: str) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    own_name = project["name"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    self_ref = re.compile(rf"^\s*{re.escape(own_name)}\s*\[([^\]]+)\]\s*$")

    def expand(reqs: list[str], seen: frozenset[str]) -> Iterator[str]:
        for req in reqs:
            match = self_ref.match(req)
            if match is None:
                yield req.strip()
                continue
            for name in (part.strip() for part in match.group(1).split(",")):
                if name in seen:
                    continue
                if name not in extras:
                    raise SystemExit(f"{own_name}[{name}] is not an extra of {pyproject}")
                yield from expand(extras[name], seen | {name})

    if extra not in extras:
        raise SystemExit(f"no extra {extra!r} in {pyproject} (have: {', '.join(sorted(extras))})")
    lines = list(project.get("dependencies", [])) + list(expand(extras[extra], frozenset({extra})))
    return list(dict.fromkeys(lines))  # first occurrence wins, order kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("extra")
    parser.add_argument("--only", default="", help="comma-separated distribution names to keep")
    args = parser.parse_args(argv)
    lines = requirements(args.pyproject, args.extra)
    if args.only:
        keep = {name.strip().lower() for name in args.only.split(",") if name.strip()}
        lines = [line for line in lines if (m := _NAME.match(line)) and m.group(1).lower() in keep]
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
