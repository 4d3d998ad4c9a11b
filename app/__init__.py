"""The ussl desktop application (PySide6). It calls ussl_core and shows the project store;
it never computes the method itself."""
