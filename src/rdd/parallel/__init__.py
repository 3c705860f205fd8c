"""More than one process: Lightning DDP, torchrun/SLURM launches, class-parallel checks,
processes that die with their parent, and the host/device plumbing they share."""
