"""The version of personalign (one home: the package, `--version`, provenance and the wheel read it)."""
__version__ = "0.1.0"
