"""Plumbing with no rdd imports: atomic file writes and safe torch loads, derived seeds."""
