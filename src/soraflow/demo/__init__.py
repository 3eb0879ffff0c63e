"""The demo corpus: deterministic synthetic videos with known ground truth."""
