"""The public contract of Code Runner: event payloads, subjects, streams and consumers.

Everything another service may rely on is defined here once. Payloads evolve only by adding
fields with defaults; a breaking change gets a new subject version (``coderunner.v2...``).
"""
