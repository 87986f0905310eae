"""Wire code both sides import: schemas, clip codec, hashing, problem types, SynthActions.

This package never imports torch.
"""
