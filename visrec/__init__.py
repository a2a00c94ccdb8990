"""visrec: a nightly batch platform for visual recommendation."""

__version__ = "0.1.0"
