"""The exact command that runs this CLI again, for hints printed at run time.

``cak-supervisor`` beside the running Python (install.py installs it there, editable, so it works
from any folder), or this Python with ``-m supervisor`` when the script is not installed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

SCRIPT = "cak-supervisor"


def supervisor_command() -> str:
    script = Path(sys.executable).with_name(SCRIPT)
    if not script.is_file():
        return f"{sys.executable} -m supervisor"
    return SCRIPT if shutil.which(SCRIPT) == str(script) else str(script)
