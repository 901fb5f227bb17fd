"""``python -m kvnet.guestnet``."""

import sys

from kvnet.guestnet.main import main

sys.exit(main())
