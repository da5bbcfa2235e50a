"""What each command does, for `digest COMMAND --help`: the one line of `digest --help`, then what to know."""

from __future__ import annotations

# What each command does, for `digest COMMAND --help`: the one line of `digest --help`, then what to know.
ABOUT = {
    "run": (
        "fetch, classify, render and deliver today's digests now, then exit",
        "For cron or a one-off run. Papers already judged are not asked again, a digest already delivered is not "
        "sent again, and what could not be done is carried over to the next run. Ends with a one-screen summary.",
    ),
    "serve": (
        "run on the configured schedule until stopped (and the web side, if set)",
        "The long-running service (the container's command): runs at schedule.time on schedule.days, catches up "
        "a missed run at start, and keeps a heartbeat for `digest health`. SIGTERM stops it at a safe point.",
    ),
    "web": (
        "serve the web side alone: rating links, archive, feed (for cron users)",
        "For a digest run from cron: serves the rating links, the archive and the Atom feed until stopped. Needs "
        "a web: section in the config.",
    ),
    "check": (
        "validate the config and reach the feed, the LLM and the mail server",
        "Sends nothing and classifies nothing: one small request to each server, and what was learned about the "
        "LLM server. Exit 1 if any of them fails.",
    ),
    "preview": (
        "render today's digests to files without sending them",
        "Classifies what is not judged yet (that is spent, and counted in the next run and in `digest status`), "
        "writes each profile's digest to a file and prints its path. With --min-score it only re-renders.",
    ),
    "status": ("show the last runs: papers, relevance, cost, delivery", "Reads the state file only; needs no key."),
    "health": (
        "exit 0 if `digest serve` is alive (for a container HEALTHCHECK), else 1",
        "Healthy while the scheduler of `digest serve` touched its heartbeat file within the last minute.",
    ),
    "rate": (
        "say 'more like this' (up) or 'not for me' (down) about a paper",
        "Your ratings become examples in the profile's instructions to the LLM, and a rated paper is not shown "
        "again. A paper the state does not hold is looked up on arXiv.",
    ),
    "ratings": ("list a profile's ratings, newest first", "Reads the state file only; needs no key."),
    "import": (
        "rate the arXiv papers of your library (Zotero; BibTeX, CSL JSON, a list)",
        "Entries that are not arXiv papers are counted and named. Importing the same file again changes nothing, "
        "and an import never overrides a rating given by hand. With no FILE, reads the profile's library (its "
        "library: section): what changed in Zotero since the last read, and its library file.",
    ),
    "mcp": (
        "serve your digests, archive and ratings to an assistant (MCP, over stdio)",
        "A Model Context Protocol server for Claude Desktop, Cursor, an IDE or any MCP client, which starts it: "
        "the latest digest, a search over every paper seen, a paper's verdicts, why it was or was not picked. "
        "Read-only unless --allow-rating.",
    ),
    "eval": (
        "how well the profile reproduces your ratings: precision, recall, F1",
        "K-fold cross-validation over your ratings, with and without them as examples. Its verdicts are cached "
        "apart from the digest's, so asking again costs nothing. Needs 3 papers rated each way.",
    ),
}
