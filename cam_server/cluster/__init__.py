"""The cluster: managers in front of worker servers, shared state in Redis (docs/cluster.md)."""
