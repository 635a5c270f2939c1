"""`eic-guard demo`: the whole product end to end against a local simulated AWS (moto), no account needed."""

from .runner import *  # noqa: F403 - the move keeps the module's names until the package is split
from .runner import ThreadedMotoServer, main  # noqa: F401
