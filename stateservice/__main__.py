"""`python -m stateservice` runs the CLI."""

import sys

from stateservice.cli import main

sys.exit(main())
