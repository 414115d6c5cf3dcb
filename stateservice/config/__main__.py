"""`python -m stateservice.config` prints the settings page (docs/settings.md)."""

from stateservice.config import page

print(page(), end="")
