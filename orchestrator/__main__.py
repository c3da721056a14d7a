"""``python -m orchestrator`` is the same as the ``exportsweep`` console script."""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main())
