"""The product's rules that the batch jobs and the API must apply alike: holdout assignment, consent,
erasure digests, cart abandonment, reasons and segments. Pure functions and constants; no I/O."""
