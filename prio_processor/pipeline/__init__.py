"""Pipeline stages: library functions over batches of records."""
