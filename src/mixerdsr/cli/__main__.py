"""``python -m mixerdsr.cli``: the mixerdsr command."""

import sys

from . import main

sys.exit(main())
