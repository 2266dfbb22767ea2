"""Shared test support code (harnesses, helpers) for tests/ and bench/."""
