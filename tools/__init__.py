"""Set-up tools run by install.py (not imported by the runner or the supervisor)."""
