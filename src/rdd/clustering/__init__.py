"""Subgroup discovery in the real data (see conf/clustering). `none`: one group per class."""
