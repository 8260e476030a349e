"""What the clusters mean: composition, macro-categories, the supervised upper bound, the gap."""
