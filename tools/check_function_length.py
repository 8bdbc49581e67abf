"""Fail when a function in src/masam is longer than the project's limit (60 lines, decorators and
docstring included). Run by ``make lint``: ``python tools/check_function_length.py [--max N] [paths]``."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def long_functions(path: Path, limit: int) -> list[tuple[int, str, int]]:
    """(line, name, length) of every function or method in ``path`` longer than ``limit`` lines."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - start + 1
            if length > limit:
                found.append((node.lineno, node.name, length))
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path, default=[ROOT / "src" / "masam"])
    parser.add_argument("--max", type=int, default=60, help="longest allowed function in lines (default 60)")
    args = parser.parse_args(argv)
    files = [p for path in args.paths for p in ([path] if path.is_file() else sorted(path.rglob("*.py")))]
    failures = [(f, *hit) for f in files for hit in long_functions(f, args.max)]
    for file, line, name, length in failures:
        print(f"{file}:{line}: {name} is {length} lines long (limit {args.max})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
