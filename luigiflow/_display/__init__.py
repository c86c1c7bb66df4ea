"""What a person sees while a build runs: displays that subscribe to build events.

`_ops` hands events to them and renders nothing itself; `cli` renders the rest.
"""
