"""``python -m pyrovae.cli``: the same as the ``pyrovae`` command."""

import sys

from pyrovae.cli import main

sys.exit(main())
