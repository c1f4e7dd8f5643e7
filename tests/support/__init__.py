"""Test support: real services (PostgreSQL, Redis), a cuttable TCP proxy, process helpers."""
