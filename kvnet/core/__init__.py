"""The shared contract of the three programs: errors, names, the model, the binding record.

Imports nothing of kvnet above it (tests/unit/test_architecture.py).
"""
