"""Settings: typed, frozen, read once from the environment; what every process shares."""
