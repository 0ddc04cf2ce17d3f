//! Host import result codes (docs/cell-abi.md) and raw argument access.

use std::fmt;

/// The `i32` every host import returns: 0 for success, otherwise the reason it failed.
///
/// The constants are the codes every capability shares; a capability may define more
/// of its own (for example 10 and 11 for `storage.s3`) with [`Code::new`].
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
    /// The operation failed (I/O, SQL, network) — also what a panicking callback returns.
    pub const FAILED: Code = Code(5);
    pub const NOT_FOUND: Code = Code(6);
    /// `pulp_alloc` is missing, trapped or returned 0.
    pub const ALLOC: Code = Code(7);
    /// Writing the result into linear memory failed.
    pub const WRITE: Code = Code(8);
    /// Over the cell's message limit.
    pub const TOO_LARGE: Code = Code(9);
    /// The capability is known to the host but not declared in the cell's manifest.
    pub const NOT_DECLARED: Code = Code(99);

    pub const fn new(raw: i32) -> Code {
        Code(raw)
    }

    pub const fn raw(self) -> i32 {
        self.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({})", self.0)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match *self {
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
        };
        write!(f, "{} ({what})", self.0)
    }
}

/// What a host import callback returns: `Ok(())` becomes code 0.
pub type ImportResult = Result<(), Code>;

/// The arguments of one host import call, as raw wasm values.
///
/// Each value holds the bits of the parameter declared at that position: an `i32` or
/// `f32` in the low 32 bits, an `i64` or `f64` in all 64.
#[derive(Clone, Copy)]
pub struct Args<'a>(&'a [u64]);

impl<'a> Args<'a> {
    pub fn new(raw: &'a [u64]) -> Self {
        Args(raw)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn raw(&self) -> &'a [u64] {
        self.0
    }

    /// The `i32` at `index`. Panics (and so fails the call with code 5) past the end.
    pub fn i32(&self, index: usize) -> i32 {
        self.0[index] as u32 as i32
    }

    pub fn i64(&self, index: usize) -> i64 {
        self.0[index] as i64
    }

    pub fn f32(&self, index: usize) -> f32 {
        f32::from_bits(self.0[index] as u32)
    }

    pub fn f64(&self, index: usize) -> f64 {
        f64::from_bits(self.0[index])
    }

    /// The pointer/length pair at `index` and `index + 1`; a negative value cannot
    /// address linear memory, so it is [`Code::OUT_OF_BOUNDS`].
    pub fn ptr_len(&self, index: usize) -> Result<(u32, u32), Code> {
        let ptr = self.i32(index);
        let len = self.i32(index + 1);
        if ptr < 0 || len < 0 {
            return Err(Code::OUT_OF_BOUNDS);
        }
        Ok((ptr as u32, len as u32))
    }
}
