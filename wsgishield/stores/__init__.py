"""Stores for shared state: in-process memory and Redis."""
