"""The reader's digests for their assistant: the read side (what the state holds, as structured answers) shared by
the MCP server (`digest mcp`) and the web side's JSON."""
