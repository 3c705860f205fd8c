"""The distillation itself: the Lightning system that optimises a synthetic set, the real
data it draws from, how the set starts, and IDM's expanded images."""
