"""convexp's launchers, here because Hydra instantiates launchers only from `hydra_plugins`."""
