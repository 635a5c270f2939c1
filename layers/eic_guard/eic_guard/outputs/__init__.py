"""What a run produces for people: the report model, the terminal table, the HTML page, S3 objects and alerts."""
