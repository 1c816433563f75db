"""`python -m outpost.cli`: the `outpost` command, without its console script."""

import sys

from outpost.cli import main

sys.exit(main())
