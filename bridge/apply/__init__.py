"""The target side: verify, decode, dedupe, and apply changes last-writer-wins."""
