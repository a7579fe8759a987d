"""Per-record decisions (origin, filters, transforms, versions) and the batch processor that applies them."""
