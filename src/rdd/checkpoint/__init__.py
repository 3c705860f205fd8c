"""Surviving a stop: checkpoints, which run ``resume=`` continues, and SIGTERM/SIGUSR1 at a
safe point."""
