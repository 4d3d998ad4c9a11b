"""Entry script of the PyInstaller bundle (packaging/ussl.spec): the desktop app, or a job child.

`ussl --job SPEC_JSON` runs one job (what `python -m ussl_core.jobs SPEC_JSON` does unfrozen);
anything else starts the GUI (app.main). freeze_support() comes first: the teacher's spawned
worker processes and multiprocessing's resource tracker re-enter the bundle's executable,
and PyInstaller's multiprocessing hook diverts them here.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from app.main import main

    sys.exit(main())
