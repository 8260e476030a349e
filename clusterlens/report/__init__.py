"""What users read: the report document, the explorer, colours and the figures."""
