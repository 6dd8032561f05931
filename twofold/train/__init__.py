"""Training: examples and teachers mined from a collection's own retrievers, losses,
loops and trainers (reranker, sparse doc encoder, query adapter), and ``optimize``.

A layer between ``search`` (the retrievers it reads as teachers) and ``app``.
"""
