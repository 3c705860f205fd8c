"""What a run shows and writes: its directory's files, loggers, progress bars and summary table."""
