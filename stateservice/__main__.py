"""`python -m stateservice` runs the CLI."""

import sys

from stateservice.cli.main import main

sys.exit(main())
