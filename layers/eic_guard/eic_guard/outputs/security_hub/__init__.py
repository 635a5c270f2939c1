"""Security Hub findings (docs/architecture.md §11)."""

from .build import *  # noqa: F403 - the module's public names, until it is split by concern (next commit)
