"""``python -m fenliu`` is the ``fenliu`` command."""

import sys

from fenliu.commands.cli import main

sys.exit(main())
