"""`python -m orchestrator.cli`: the `elastiq` command."""

import sys

from orchestrator.cli import main

sys.exit(main())
