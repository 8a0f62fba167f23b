//! placeholder
use crate::policy::document::Document;
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ImportError(String);
pub fn import(_files: &[(String, Vec<u8>)]) -> Result<Document, ImportError> { Err(ImportError("todo".into())) }
pub fn to_yaml(_doc: &Document) -> Result<String, ImportError> { Err(ImportError("todo".into())) }
