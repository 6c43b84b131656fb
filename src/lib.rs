//! Stowage: serve thousands of small models from a few packed nodes.
