"""Object storage (S3, S3-compatible, local directories): files per format and a manifest per window."""
