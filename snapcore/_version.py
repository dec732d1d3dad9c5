"""Version of snapcore; kept in one place so start-up reads no metadata."""

__version__ = "0.1.0"
