//! What stops the host before its cells run, by kind: callers and tests match
//! the variant; the text is what an operator reads, one line saying what is
//! wrong and what to do.

use crate::extensions::ExtensionError;
use crate::manifest::ManifestError;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A manifest that does not parse or validate.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The extensions file, or a library it lists.
    #[error(transparent)]
    Extension(#[from] ExtensionError),
    /// The cells as given together: two with one name.
    #[error("{0}")]
    Cells(String),
    /// Which capabilities a cell gets: nothing provides one, two providers and no
    /// pin, a wrong pin, two capabilities claiming one import name.
    #[error("{0}")]
    Resolve(String),
    /// A module that does not compile, or whose imports and exports do not fit
    /// the cell's capabilities.
    #[error("{0}")]
    Link(String),
    /// A cell's storage directory, a capability's setup for it, or its thread.
    #[error("{0}")]
    Setup(String),
}

/// The binary reports every error as its text.
impl From<HostError> for String {
    fn from(error: HostError) -> String {
        error.to_string()
    }
}
