"""The coordinator as a service: its configuration, metrics and state."""
