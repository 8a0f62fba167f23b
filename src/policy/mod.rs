//! The policy: documents, validation, the compiled snapshot and its evaluation.
//!
//! Nothing here does I/O except [`source`], which reads files.

pub(crate) mod assignments;
pub mod bearer;
pub mod browse;
pub mod compile;
pub mod document;
pub mod error;
pub mod explain;
pub mod identity;
pub mod index;
mod layout;
pub mod overlay;
pub mod plan;
pub mod queries;
pub mod route;
pub mod snapshot;
pub mod source;
pub mod syntax;

pub use compile::{compile_documents, compile_sources};
pub use error::{PolicyError, Problem};
pub use explain::{Explanation, MissReason, NearMiss};
pub use snapshot::{CheckRequest, Decision, Reason, RequestError, Snapshot, Verdict};
pub use source::SourceDocument;
