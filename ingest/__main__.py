from ingest.cli import cli

cli()
