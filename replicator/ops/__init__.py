"""Operator tools that reuse the pipeline and writer: backfill, verify, redrive, status."""
