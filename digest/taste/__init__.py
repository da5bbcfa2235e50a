"""The reader's taste: ratings, the rules a profile sets, the library imported, and how well a profile matches."""
