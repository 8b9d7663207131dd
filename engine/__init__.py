"""imgsearch: reverse image search on PostgreSQL.

Pipeline, one module per stage:
    loading -> hashes / regions (fingerprint) -> store -> search -> verify -> explain
"""

__version__ = "0.1.0"
