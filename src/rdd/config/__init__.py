"""The command line and the config: Hydra's configs and schemas, the checks of a composed
config, ``--help``, one-line errors."""
