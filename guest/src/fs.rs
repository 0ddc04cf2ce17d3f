//! `storage.fs`: the cell's own directory, `{storage-root}/{cell}/files/`.
//!
//! Paths are relative and `/`-separated. The host refuses (code 4) absolute
//! paths, `..`, NUL bytes and symlinks that lead outside the directory.

use crate::{raw, Code, HostBuf};

/// The whole file; 6 when it does not exist, 9 when it is over the cell's
/// message limit.
pub fn read(path: &str) -> Result<HostBuf, Code> {
    let (path_ptr, path_len) = raw::ptr_len(path.as_bytes());
    // SAFETY: `path` outlives the call, and fs_read keeps the out-pointer
    // contract of docs/cell-abi.md.
    unsafe {
        HostBuf::receive(|ptr_out, len_out| raw::fs_read(path_ptr, path_len, ptr_out, len_out))
    }
}

/// Replaces the file with `data` atomically (readers see the old or the new
/// content), creating parent directories.
pub fn write(path: &str, data: &[u8]) -> Result<(), Code> {
    let (path_ptr, path_len) = raw::ptr_len(path.as_bytes());
    let (data_ptr, data_len) = raw::ptr_len(data);
    // SAFETY: a plain host call; both slices outlive it.
    Code::check(unsafe { raw::fs_write(path_ptr, path_len, data_ptr, data_len) })
}

/// Removes a file or an empty directory; 6 when there is none.
pub fn delete(path: &str) -> Result<(), Code> {
    raw::call(raw::fs_delete, path.as_bytes())
}

/// The paths of the cell's files that start with `prefix` (`""` = all),
/// sorted.
pub fn list(prefix: &str) -> Result<Vec<String>, Code> {
    let (prefix_ptr, prefix_len) = raw::ptr_len(prefix.as_bytes());
    // SAFETY: `prefix` outlives the call, and fs_list keeps the out-pointer
    // contract of docs/cell-abi.md.
    let listing = unsafe {
        HostBuf::receive(|ptr_out, len_out| raw::fs_list(prefix_ptr, prefix_len, ptr_out, len_out))
    }?;
    listing.decode().map_err(|_| Code::DECODE)
}
