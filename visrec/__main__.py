"""``python -m visrec``: the same command line as the ``visrec`` script."""

import sys

from visrec.app.cli import main

sys.exit(main())
