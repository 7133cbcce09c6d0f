"""SEAL generative retrieval: corpus n-grams as document identifiers, constrained decoding.

One concept per module: ``substring`` (the suffix array), ``sharded`` (a corpus index in
shards, for builds larger than memory), ``generator`` (loading the model,
GGUF included, and teacher-forced scores), ``constrained`` (the logits processor and beam
search), ``scoring`` (n-gram weights, intersective document scores), ``retriever`` (the
``seal`` stage). Imports stay lazy: ``import cormorant`` does not load torch.
"""
