"""The study: what a tune stores, where, and how a run resumes it."""
