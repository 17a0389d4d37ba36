"""Process plumbing shared by every Code Runner process: settings, bus, telemetry, the CLI."""
