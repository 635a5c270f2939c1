"""`python -m eic_guard.cli`: the installed `eic-guard` command."""

import sys

from . import main

sys.exit(main())
