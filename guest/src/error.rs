use std::fmt;

/// A malformed step envelope or a MessagePack value that does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<pulp_wire::msgpack::Error> for Error {
    fn from(error: pulp_wire::msgpack::Error) -> Error {
        Error(error.to_string())
    }
}

/// Lets `?` forward an [`Error`] out of [`Cell::init`](crate::Cell::init).
impl From<Error> for String {
    fn from(error: Error) -> String {
        error.0
    }
}
