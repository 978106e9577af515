"""A recipe plugin for tests: when ``DLRUN_TEST_WAIT_FOR`` names a file, importing this module
(which dlrun does while it builds the model, before it takes the run's lock) writes
``<file>.waiting`` and blocks until the file exists — so a test can let another process run
in between. Without the variable it does nothing."""

import os
import time
from pathlib import Path

_GO = os.environ.get("DLRUN_TEST_WAIT_FOR")
if _GO:
    Path(_GO + ".waiting").write_text(str(os.getpid()))
    _deadline = time.monotonic() + 300
    while not Path(_GO).exists() and time.monotonic() < _deadline:
        time.sleep(0.05)
