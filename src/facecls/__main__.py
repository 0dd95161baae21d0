"""``python -m facecls`` (also how ``torchrun -m facecls`` starts it)."""

import sys

from facecls.cli import main

sys.exit(main())
