"""Test plugin that cannot be imported."""

raise ImportError("taskmaster_fn_test_broken is broken on purpose")
