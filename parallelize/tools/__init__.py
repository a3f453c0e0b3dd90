"""Tools a worker may call: the built-in `fs` tools, declared commands and MCP servers.

The package sits between the engine (which runs the tool loop) and the inputs (whose secret
scanner, bounds and framing every tool result goes through before a model sees it).
"""
