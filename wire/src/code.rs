//! Host import result codes.

use std::fmt;

/// The `i32` every host import returns: 0 for success, otherwise why it failed.
///
/// A struct rather than an enum so that codes one capability defines (an
/// extension may add its own, like [`s3::CONFIG_MISSING`]) pass through unchanged.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(i32);

impl Code {
    pub const OK: Code = Code(0);
    /// Empty input where input is required.
    pub const EMPTY: Code = Code(1);
    /// A pointer/length pair is outside linear memory.
    pub const OUT_OF_BOUNDS: Code = Code(2);
    /// Input could not be decoded (MessagePack, UTF-8).
    pub const DECODE: Code = Code(3);
    /// Refused: unknown route or id, path escapes the sandbox, host not allowed.
    pub const REFUSED: Code = Code(4);
    /// The operation failed (I/O, SQL, network), or the import panicked.
    pub const FAILED: Code = Code(5);
    pub const NOT_FOUND: Code = Code(6);
    /// `pulp_alloc` is missing, trapped or returned 0.
    pub const ALLOC: Code = Code(7);
    /// Writing the result into linear memory failed.
    pub const WRITE: Code = Code(8);
    /// Over the cell's message limit.
    pub const TOO_LARGE: Code = Code(9);
    /// The capability exists but the cell's manifest does not declare it.
    pub const NOT_DECLARED: Code = Code(99);

    pub const fn new(raw: i32) -> Code {
        Code(raw)
    }

    pub const fn raw(self) -> i32 {
        self.0
    }

    /// `Ok` for 0, the code as the error otherwise.
    pub const fn check(raw: i32) -> Result<(), Code> {
        match raw {
            0 => Ok(()),
            _ => Err(Code(raw)),
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Code::OK => "ok",
            Code::EMPTY => "empty input",
            Code::OUT_OF_BOUNDS => "pointer outside linear memory",
            Code::DECODE => "input could not be decoded",
            Code::REFUSED => "refused",
            Code::FAILED => "operation failed",
            Code::NOT_FOUND => "not found",
            Code::ALLOC => "pulp_alloc failed",
            Code::WRITE => "writing the result failed",
            Code::TOO_LARGE => "too large",
            Code::NOT_DECLARED => "capability not declared",
            _ => "capability-specific error",
        }
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({})", self.0)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.meaning())
    }
}

impl std::error::Error for Code {}

/// The codes of `storage.s3` (the `pulp-ext-s3` extension) beyond the shared ones.
pub mod s3 {
    use super::Code;

    /// The extension has no bucket (or endpoint, or credentials) configured.
    pub const CONFIG_MISSING: Code = Code::new(10);
    /// The server answered `AccessDenied`: known credentials without the permission.
    pub const ACCESS_DENIED: Code = Code::new(11);
}

/// The codes of `pulp_call`, cell-to-cell calls, beyond the shared ones.
pub mod call {
    use super::Code;

    /// The caller's `consumes` or the target's `provides` does not list the
    /// function, or no such target cell exists.
    pub const DENIED: Code = Code::new(11);
    /// The target is already waiting on this call (A calls B calls A).
    pub const CYCLE: Code = Code::new(12);
}

#[cfg(test)]
mod tests {
    use super::{s3, Code};

    #[test]
    fn codes_check_and_print() {
        assert_eq!(Code::check(0), Ok(()));
        assert_eq!(Code::check(9), Err(Code::TOO_LARGE));
        assert_eq!(Code::check(-1), Err(Code::new(-1)));
        assert_eq!(Code::TOO_LARGE.to_string(), "9 (too large)");
        assert_eq!(Code::new(42).to_string(), "42 (capability-specific error)");
        assert_eq!(s3::ACCESS_DENIED.raw(), 11);
        assert_eq!(format!("{:?}", Code::REFUSED), "Code(4)");
    }
}
