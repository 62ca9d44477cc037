"""Refresh the settings table in README.md from ``tap-kustomer --about --format markdown``.

python -m scripts.readme_settings            # rewrite the block between the markers
python -m scripts.readme_settings --check    # exit 1 if README.md is stale
"""

from __future__ import annotations

import argparse

from scripts.hub_definition import ROOT, about_output

README = ROOT / "README.md"
START = "<!-- settings:start -->"
END = "<!-- settings:end -->"


def settings_table(markdown: str | None = None) -> str:
    """The settings table (header row to last row) of the tap's markdown ``--about``."""
    if markdown is None:
        markdown = about_output("markdown")
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Setting"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


def updated(readme: str, table: str) -> str:
    """README text with the block between the markers replaced by ``table``."""
    head, _, rest = readme.partition(START)
    _, found, tail = rest.partition(END)
    if not found:
        raise SystemExit(f"README.md lacks the {START} ... {END} markers")
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check, verify) the README settings table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is not current")
    args = parser.parse_args(argv)
    current = README.read_text()
    new = updated(current, settings_table())
    if args.check:
        if new != current:
            print("README.md settings table is stale: run python -m scripts.readme_settings")
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
