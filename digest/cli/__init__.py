"""The command line: argument parsing and dispatch (`main`), what a run prints (`report`, `progress`), `check` and
`serve`. It calls into the pipeline and the state, and nothing below it imports it."""
