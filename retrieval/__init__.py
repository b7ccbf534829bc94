"""Shared retrieval pieces: FAISS index and search, IR metrics, TREC files, safe file writes."""
