"""The shared contract of the three programs: errors, names, the model, the binding record,
the pod after the binding ran (``plumbing``).

Imports nothing of kvnet above it (tests/unit/test_architecture.py).
"""
