"""``python -m manifoldcert``: the ``manifoldcert`` command without the console script."""

from __future__ import annotations

import sys

from manifoldcert.cli import main

if __name__ == "__main__":
    sys.exit(main())
