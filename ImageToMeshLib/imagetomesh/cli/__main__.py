"""``python -m imagetomesh.cli``: the ``imagetomesh`` command."""

import sys

from imagetomesh.cli import main

sys.exit(main())
