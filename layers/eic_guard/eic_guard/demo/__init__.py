"""`eic-guard demo`: the whole product end to end against a local simulated AWS (moto), no account needed.

scenarios (the world, as data) · seeding (into the simulated account) · environment (the moto server) · transcript
(the CLI run in-process, and what is printed) · proof (reports and AWS state against the scenarios) · organization
(the last act) · runner (the acts in order). moto is a development dependency: only `eic-guard demo` imports this.
"""

from .runner import main

__all__ = ["main"]
