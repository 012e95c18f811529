"""``python -m advlab.cli``."""

import sys

from advlab.cli import main

sys.exit(main())
