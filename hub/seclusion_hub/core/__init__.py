"""The pure core: the rules of semantics.md with no I/O, time passed in.

Nothing under this package imports paho, SQLModel, FastAPI, APScheduler or gpiozero.
"""
