"""File-format front ends: ingest files as records or datasets, render previews."""
