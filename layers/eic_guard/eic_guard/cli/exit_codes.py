"""What the CLI's exit code means (docs/architecture.md §5): one table, read by `--help` and the README."""

from __future__ import annotations

OK = 0
NONCOMPLIANT = 1
USAGE = 2

# (code, meaning), in the order `--help` and the README list them.
TABLE = (
    (OK, "compliant (or fixed, or refreshed)"),
    (
        NONCOMPLIANT,
        "some instance is non-compliant, a target (account, region) could not be scanned, or a refresh raised an alert",
    ),
    (USAGE, "usage, configuration or input error (one line on stderr, nothing changed)"),
)


def help_text() -> str:
    """The exit codes as `--help` lists them."""
    return "exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in TABLE) + "."
