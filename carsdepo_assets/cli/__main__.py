"""``python -m carsdepo_assets.cli``: the ``carsdepo`` command."""

import sys

from carsdepo_assets.cli import main

sys.exit(main())
