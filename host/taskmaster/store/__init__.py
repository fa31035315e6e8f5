"""Redis/Valkey: connections, the embedded Valkey launcher, store checks."""
