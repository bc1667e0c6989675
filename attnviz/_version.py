"""The package version, in a leaf module so that no module imports the package ``__init__``."""

__version__ = "0.1.0"
