"""The built-in tools of dcmpipe, each a plugin module registered from dcmpipe.plugins.BUILTINS."""
