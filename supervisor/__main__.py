"""``python -m supervisor``: see ``supervisor.cli``."""

import sys

from .cli import main

sys.exit(main())
