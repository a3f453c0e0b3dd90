"""What to read: discovery (gitignore, binaries, secrets, symlinks), decoding, counting."""
