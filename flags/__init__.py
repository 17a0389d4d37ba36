"""Feature flags: a small set of switches and shares read at run time, changed without a restart.

- :mod:`flags.declared`: the one declaration of every flag (name, kind, default, what it does), the
  parsing of a value, and the deterministic bucketing of a share.
- :mod:`flags.store`: where the values live (a Redis hash, written by ``coderunner flag set``
  together with a ``flag.changed`` audit event on the FLAGS stream) and :class:`~flags.store.FlagReader`,
  the cached, fail-safe view every process checks.

See docs/flags.md.
"""
