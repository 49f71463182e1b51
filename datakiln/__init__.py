"""datakiln: declarative dataset builds."""

__version__ = "0.1.0"
