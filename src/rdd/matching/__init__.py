"""Matching methods (see conf/matching): gradient matching (dc, dsa) and coreset baselines."""
