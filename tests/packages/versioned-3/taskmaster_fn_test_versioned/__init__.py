"""Version 3.0.0 of the test plugin: broken, it cannot be imported."""

from taskmaster import Function, hookimpl  # noqa: F401

raise RuntimeError("version 3.0.0 is broken on purpose")
