"""Logging and tracing, set up once per process."""
