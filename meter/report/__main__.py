"""``python -m meter.report FILE [-o OUT]``: `meter report` without the ``meter`` command."""

import sys

from meter.report import main

sys.exit(main())
