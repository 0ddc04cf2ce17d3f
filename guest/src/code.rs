use std::fmt;

/// The `i32` status a host import returns (docs/cell-abi.md).
///
/// A struct rather than an enum so that codes defined by one capability (an
/// extension may add its own, e.g. 10 or 11) pass through unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Code(i32);

impl Code {
    pub const OK: Code = Code(0);
    /// Empty input where input is required.
    pub const EMPTY: Code = Code(1);
    /// A pointer/length pair is outside linear memory.
    pub const OUT_OF_BOUNDS: Code = Code(2);
    /// Input could not be decoded (MessagePack, UTF-8).
    pub const DECODE: Code = Code(3);
    /// Unknown route or id, path escapes the sandbox, host not allowed.
    pub const REFUSED: Code = Code(4);
    /// The operation failed (I/O, SQL, network).
    pub const FAILED: Code = Code(5);
    pub const NOT_FOUND: Code = Code(6);
    /// `pulp_alloc` missing, trapped or returned 0.
    pub const ALLOC: Code = Code(7);
    /// Writing the result into linear memory failed.
    pub const WRITE: Code = Code(8);
    /// Over the cell's message limit.
    pub const TOO_LARGE: Code = Code(9);
    /// The capability exists but this cell's manifest does not declare it.
    pub const NOT_DECLARED: Code = Code(99);

    pub const fn from_raw(raw: i32) -> Code {
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
        match self.0 {
            0 => "ok",
            1 => "empty input",
            2 => "out of bounds",
            3 => "decode error",
            4 => "refused",
            5 => "failed",
            6 => "not found",
            7 => "allocation failed",
            8 => "write failed",
            9 => "too large",
            99 => "not declared",
            _ => "capability-specific",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.meaning())
    }
}

impl std::error::Error for Code {}
