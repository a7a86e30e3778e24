"""The label convention shared by the data that writes labels and the loss that reads them.

Kept free of torch and numpy imports: `data.examples` (numpy-only) imports it.
"""

IGNORE_INDEX = -100
"""The label of tokens nothing is trained on (what torch's cross_entropy skips); the one home."""
