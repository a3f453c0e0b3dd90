"""Recipe + inputs -> tasks: window, chunks, splitting, templates, JSON contracts."""
