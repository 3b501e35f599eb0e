"""The hub: times every confinement, watches supervision, and keeps the record."""

__version__ = "0.1.0"
