"""The longest functions of the library at a commit: issue 17's "longest functions (before
-> after)", read from git so two commits compare without checking either out.

    python benchmarks/longest_functions.py 46797e8 HEAD
"""

from __future__ import annotations

import argparse
import ast
import subprocess

PACKAGES = ("searchkd", "runners", "search_spaces")


def function_lengths(commit: str) -> list[tuple[int, str]]:
    """(lines, "path:name") of every function and method, longest first."""
    listing = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", commit], capture_output=True, text=True, check=True
    ).stdout.split()
    rows = []
    for path in listing:
        if not (path.endswith(".py") and path.split("/")[0] in PACKAGES):
            continue
        source = subprocess.run(
            ["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True
        ).stdout
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append((node.end_lineno - node.lineno + 1, f"{path}:{node.name}"))
    return sorted(rows, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commits", nargs="+")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    for commit in args.commits:
        rows = function_lengths(commit)
        over = sum(1 for lines, _ in rows if lines > 60)
        print(f"{commit}: {len(rows)} functions, {over} over 60 lines")
        for lines, name in rows[: args.top]:
            print(f"  {lines:4d}  {name}")


if __name__ == "__main__":
    main()
