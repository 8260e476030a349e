"""Where the folder is wrong: label issues, neighbours and near-duplicates, representatives, the per-image table."""
