//! A model's life on the node, from a name in a plan to a loaded engine and back: which models the
//! node serves (`spec`), where their files come from (`storage`: local disk, S3 into a cache), how
//! one is loaded (`load`, on the faster engine for `auto`: `choice`), the loader that brings them up at start and at every reload
//! (`startup`), the registry of their states (`registry`), the cold pool that loads rarely used
//! models on demand (`cold`), and live reloads (`diff` of two model sets, applied by `reconcile`).

pub mod choice;
pub mod cold;
pub mod diff;
pub mod load;
pub mod reconcile;
pub mod registry;
pub mod spec;
pub mod startup;
pub mod storage;
