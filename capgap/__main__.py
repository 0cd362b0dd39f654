"""``python -m capgap`` runs the CLI."""

import sys

from capgap.cli import main

sys.exit(main())
