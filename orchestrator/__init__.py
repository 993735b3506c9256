"""Studies in SQL, search strategies, execution, resume, export and the CLI."""
