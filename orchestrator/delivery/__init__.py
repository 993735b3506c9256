"""What a study gives its user: models to ship (`export`), pictures and a table (`report`), where it
stands (`status`), and output folders written whole or not at all (`outdir`)."""
