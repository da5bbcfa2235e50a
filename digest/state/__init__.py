"""The state file's tables, one part of `Store` each: papers, verdicts, ratings, digests, batches, runs."""
