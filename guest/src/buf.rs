use std::fmt;
use std::ops::Deref;

use serde::Deserialize;

use crate::{rt, Code, Error};

/// Data an import returned through its out-pointers: a buffer the host
/// allocated with `pulp_alloc` and handed over to the cell.
///
/// It derefs to the bytes and frees them on drop with the layout
/// `pulp_alloc` used. (A `Vec<u8>` built on the same pointer would free it
/// with a 1-aligned layout instead of `pulp_alloc`'s 8-aligned one, which
/// the allocator does not allow.)
pub struct HostBuf {
    ptr: u32,
    len: u32,
}

impl HostBuf {
    /// Calls `import` with the addresses of two out-slots,
    /// `(data_ptr_out, data_len_out)`, and when it returns 0 takes the
    /// buffer the host stored there. Slots the host left alone read as an
    /// empty result.
    ///
    /// ```no_run
    /// # use pulp_guest::{raw, HostBuf};
    /// # let (req_ptr, req_len) = (0, 0);
    /// // SAFETY: http_fetch keeps the out-pointer contract of docs/cell-abi.md.
    /// let response = unsafe {
    ///     HostBuf::receive(|ptr_out, len_out| raw::http_fetch(req_ptr, req_len, ptr_out, len_out))
    /// };
    /// ```
    ///
    /// # Safety
    /// When `import` returns 0 it must have stored, as little-endian u32,
    /// a pointer that this cell's `pulp_alloc(len)` returned and that `len`,
    /// and handed that buffer over: nothing else may use or free it. This
    /// is what docs/cell-abi.md promises for host imports that return data.
    pub unsafe fn receive(import: impl FnOnce(i32, i32) -> i32) -> Result<HostBuf, Code> {
        let mut slots = [0u32; 2];
        let [ptr_out, len_out] = slots
            .each_mut()
            .map(|slot| slot as *mut u32 as usize as i32);
        Code::check(import(ptr_out, len_out))?;
        Ok(HostBuf {
            ptr: u32::from_le(slots[0]),
            len: u32::from_le(slots[1]),
        })
    }

    /// Decodes the MessagePack value the buffer holds.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        rmp_serde::from_slice(self).map_err(|e| Error::new(format!("import result: {e}")))
    }
}

impl Deref for HostBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.ptr == 0 || self.len == 0 {
            return &[];
        }
        // SAFETY: `receive`'s caller vouched that ptr/len is a live
        // pulp_alloc buffer owned by this value.
        unsafe { std::slice::from_raw_parts(self.ptr as usize as *const u8, self.len as usize) }
    }
}

impl Drop for HostBuf {
    fn drop(&mut self) {
        // SAFETY: as in `deref`; `free` ignores a null or empty buffer.
        unsafe { rt::free(self.ptr as i32, self.len as i32) }
    }
}

impl fmt::Debug for HostBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBuf").field("len", &self.len).finish()
    }
}
