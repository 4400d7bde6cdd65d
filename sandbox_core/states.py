"""The states of a sandbox record, as upstream names them, plus ``creating`` while it starts.

creating -> warm (in a pool, or out of one with no session) -> running (handed to a client)
-> recycled (its session went idle: container gone, workspace kept) -> replaced (restored as
another sandbox) | released (gone for good); error when a create failed.
"""

CREATING = "creating"
WARM = "warm"
RUNNING = "running"
RECYCLED = "recycled"
REPLACED = "replaced"
RELEASED = "released"
ERROR = "error"

#: The states that hold an instance slot under MAX_SANDBOX_INSTANCES.
LIVE_STATES = (CREATING, WARM, RUNNING)
