"""The one Redis layer: clients, the key layout, payload formats and Lua scripts, and the reads and
writes both the batch (`jobs/`) and the API (`serving/`) make. It imports neither of them."""
