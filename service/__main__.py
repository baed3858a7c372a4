"""`python -m service` is the `runsteps` command."""

from __future__ import annotations

import sys

from service.edge.cli import main

sys.exit(main())
