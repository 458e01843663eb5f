"""Flow templates shipped with flowfed (see flowfed.server.templates)."""
