"""Helpers that start real servers for the tests, on free loopback ports."""
