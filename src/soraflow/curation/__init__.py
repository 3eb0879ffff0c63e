"""Data curation (Open-Sora 1.1 part 5): probe, scene cuts, per-clip scores, captions, filters.

Entry points: :func:`soraflow.curation.pipeline.curate_source` (one source file, idempotent,
cached by content hash) and :func:`soraflow.curation.tables.assemble_tables` (the output
tables); ``flows/curate.py`` fans the first out over a Prefect task runner.
"""
