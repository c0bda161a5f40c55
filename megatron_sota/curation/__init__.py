"""Data curation on datatrove: filters, PII redaction, quality score, exact and MinHash dedup, report (tools/curate.py)."""
