//! Host import result codes (docs/cell-abi.md) and raw argument access.

pub use pulp_wire::Code;

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
