"""The built-in tools of dcmpipe: each public module here is a plugin, listed in dcmpipe.registry.BUILTINS."""
