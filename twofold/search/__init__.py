"""Searchers over opened indexes, fusion, the query pipeline, evaluation."""
