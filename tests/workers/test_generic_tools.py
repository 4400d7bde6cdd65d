from sandbox_workers.agent_client import GENERIC_TOOLS

#: The "generic" group exactly as upstream's server answers it (wire contract, observed).
CONTRACT = {
    "run_ipython_cell": {"name": "run_ipython_cell", "json_schema": {"type": "function", "function": {
        "name": "run_ipython_cell", "description": "Run an IPython cell.", "parameters": {
            "type": "object", "properties": {"code": {"type": "string",
                                                      "description": "IPython code to execute"}},
            "required": ["code"]}}}},
    "run_shell_command": {"name": "run_shell_command", "json_schema": {"type": "function", "function": {
        "name": "run_shell_command", "description": "Run a shell command.", "parameters": {
            "type": "object", "properties": {"command": {"type": "string",
                                                         "description": "Shell command to execute"}},
            "required": ["command"]}}}},
}


def test_generic_group_is_upstreams():
    assert GENERIC_TOOLS == CONTRACT
