"""``python -m metricc`` runs the same command line as the ``metricc`` script."""

import sys

from .cli import main

sys.exit(main())
