"""The local stack: embedded servers (NATS, Redis, MongoDB-wire), the `coderunner up` supervisor, and
the rule that every process it starts dies with it."""
