"""The built-in tools of dcmpipe: every public module here is a plugin (see dcmpipe.registry.builtins)."""
