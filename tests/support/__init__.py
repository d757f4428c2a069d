"""Test helpers: polling with a deadline, worker processes, tokens."""
