import os
import tempfile

# GUI tests: no display, and QSettings (recent projects, geometry) kept out of the user's config.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="ussl-test-config-")
# ... and the sample project (QStandardPaths.AppDataLocation) out of the user's data folder.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="ussl-test-data-")
