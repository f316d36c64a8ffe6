//! The parts of `cpis` that are reachable from outside its binary: only the extract parser, for
//! the fuzz targets in `fuzz/` (hidden; not an API). The tool itself is `main.rs`.
#![forbid(unsafe_code)]

#[doc(hidden)]
pub mod extract;
