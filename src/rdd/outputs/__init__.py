"""What a run shows and writes: its directory's files (rdd.outputs.files, with
``read_metrics``), loggers, progress bars and summary table."""
