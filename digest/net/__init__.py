"""Shared network ground: bounded HTTP downloads and the pacing every client of a rate-limited server uses."""
