//! `storage.fs`: each cell's files under `{storage-root}/{cell}/files/`.
//!
//! Every path is opened relative to a directory handle (cap-std), so the OS
//! resolution itself refuses `..` and symlinks that lead outside; the string
//! checks before it only give clearer errors and codes.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt, OpenOptions, OpenOptionsExt};
use pulp_ext_api::{Capability, CellState, Code, Guest, HostImport, SetupEnv};

use super::quota::{CellQuota, Quotas};

pub const NAME: &str = "storage.fs";

/// Where writes are staged before the rename makes them visible; a sibling of
/// `files/` so the cell never sees half-written files.
const STAGING: &str = "files.tmp";
/// A cell's files and directories are its own: no other user on the machine
/// reads them.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// The capability's state for one cell.
struct CellFiles {
    files: Dir,
    staging: Dir,
    next_temp: AtomicU64,
    quota: Arc<CellQuota>,
}

pub struct Files {
    quotas: Arc<Quotas>,
}

impl Files {
    pub fn new(quotas: Arc<Quotas>) -> Files {
        Files { quotas }
    }
}

impl Capability for Files {
    fn name(&self) -> &str {
        NAME
    }

    fn provider(&self) -> &str {
        crate::builtin::PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        vec![
            HostImport::inputs_output("fs_read", |guest, [path]| {
                read_file(guest, sandbox_path(guest, path)?, guest.state()?)
            }),
            HostImport::inputs("fs_write", |guest, [path, data]| {
                let cell = guest.state::<CellFiles>()?;
                let path = sandbox_path(guest, path)?;
                match write_file(cell, path, data) {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        tracing::warn!(
                            cell = guest.cell(),
                            path,
                            "storage.fs: write refused: {} bytes would take the cell past max_storage_bytes = {}",
                            data.len(),
                            cell.quota.limit()
                        );
                        Err(Code::TOO_LARGE)
                    }
                    Err(e) => Err(io_code(guest, "write", path, e)),
                }
            }),
            HostImport::inputs("fs_delete", |guest, [path]| {
                let path = sandbox_path(guest, path)?;
                delete_path(guest.state()?, path).map_err(|e| io_code(guest, "delete", path, e))
            }),
            HostImport::inputs_output("fs_list", |guest, [prefix]| {
                list_files(guest, prefix, guest.state()?)
            }),
        ]
    }

    fn setup(&self, env: &SetupEnv) -> Result<CellState, String> {
        let open = |name: &str| {
            let path = env.storage_dir.join(name);
            private_dir(&path)
                .and_then(|()| Dir::open_ambient_dir(&path, ambient_authority()))
                .map_err(|e| format!("cannot open {}: {e}", path.display()))
        };
        let files = open("files")?;
        let staging = open(STAGING)?;
        // Leftovers of writes a killed host never renamed.
        for entry in staging.entries().map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            staging
                .remove_file(entry.file_name())
                .map_err(|e| format!("cannot clear {STAGING}: {e}"))?;
        }
        let quota = self.quotas.cell(&env.cell, &env.storage_dir)?;
        Ok(CellState::new(CellFiles {
            files,
            staging,
            next_temp: AtomicU64::new(0),
            quota,
        }))
    }
}

/// Creates `path` and its parents owner-only, and makes an existing one so.
fn private_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(path)
}

/// Reads a path argument and refuses, before touching the disk, what can never
/// name a file inside the sandbox.
fn sandbox_path<'p>(guest: &Guest<'_>, path: &'p [u8]) -> Result<&'p str, Code> {
    let path = std::str::from_utf8(path).map_err(|_| Code::DECODE)?;
    if path.is_empty() {
        return Err(Code::EMPTY);
    }
    let escapes = path.contains('\0')
        || Path::new(path).has_root()
        || path.split('/').any(|segment| segment == "..");
    if escapes {
        tracing::warn!(cell = guest.cell(), path, "storage.fs: path refused");
        return Err(Code::REFUSED);
    }
    Ok(path)
}

/// Maps an I/O error to a code: a path the directory handle refuses (it leads
/// outside the sandbox) is code 4, a missing file 6, anything else 5.
fn io_code(guest: &Guest<'_>, op: &str, path: &str, error: io::Error) -> Code {
    let cell = guest.cell();
    match error.kind() {
        io::ErrorKind::NotFound => Code::NOT_FOUND,
        io::ErrorKind::PermissionDenied => {
            tracing::warn!(cell, path, "storage.fs: {op} refused: {error}");
            Code::REFUSED
        }
        _ => {
            tracing::warn!(cell, path, "storage.fs: {op} failed: {error}");
            Code::FAILED
        }
    }
}

fn read_file(guest: &Guest<'_>, path: &str, cell: &CellFiles) -> Result<Vec<u8>, Code> {
    let limit = guest.max_message_bytes();
    let read = || -> io::Result<Result<Vec<u8>, Code>> {
        let file = cell.files.open(path)?;
        let size = file.metadata()?.len();
        if size > limit {
            return Ok(Err(Code::TOO_LARGE));
        }
        let mut data = Vec::with_capacity(size as usize);
        file.take(limit + 1).read_to_end(&mut data)?;
        // The file may have grown since its size was read.
        if data.len() as u64 > limit {
            return Ok(Err(Code::TOO_LARGE));
        }
        Ok(Ok(data))
    };
    read().map_err(|e| io_code(guest, "read", path, e))?
}

/// Refuses a symlink at `path` that leads outside the sandbox: writing or
/// deleting would touch only the link, but such a link is refused whatever
/// the operation.
fn check_link(files: &Dir, path: &str) -> io::Result<()> {
    if files.symlink_metadata(path).is_ok_and(|m| m.is_symlink()) {
        match files.metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Bytes of the regular file at `path`, 0 when there is none.
fn file_size(files: &Dir, path: &str) -> u64 {
    files
        .symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len())
}

/// Writes `data` to `path` atomically; `Ok(false)` when it would exceed the
/// cell's storage quota, and then nothing is written.
fn write_file(cell: &CellFiles, path: &str, data: &[u8]) -> io::Result<bool> {
    check_link(&cell.files, path)?;
    let old = file_size(&cell.files, path);
    let new = data.len() as u64;
    if !cell.quota.files_fit(old, new) {
        return Ok(false);
    }
    if let Some(parent) = parent_of(path) {
        // Resolving the parent first refuses a link that leads outside, which
        // create_dir_all would only report as "exists".
        match cell.files.metadata(parent) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut builder = DirBuilder::new();
                builder.recursive(true).mode(DIR_MODE);
                cell.files.create_dir_with(parent, &builder)?
            }
            resolved => {
                resolved?;
            }
        }
    }
    let temp = format!("{}", cell.next_temp.fetch_add(1, Ordering::Relaxed));
    let staged = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true).mode(FILE_MODE);
        let mut file = cell.staging.open_with(&temp, &options)?;
        file.write_all(data)?;
        // On disk before it becomes visible: a crash leaves the old or the new
        // content, never a torn file.
        file.sync_all()?;
        cell.staging.rename(&temp, &cell.files, path)
    })();
    if staged.is_err() {
        let _ = cell.staging.remove_file(&temp);
    }
    staged?;
    cell.quota.files_changed(old, new);
    sync_parent(&cell.files, path)?;
    Ok(true)
}

fn delete_path(cell: &CellFiles, path: &str) -> io::Result<()> {
    let files = &cell.files;
    check_link(files, path)?;
    match files.symlink_metadata(path)? {
        meta if meta.is_dir() => files.remove_dir(path)?,
        meta => {
            files.remove_file(path)?;
            if meta.is_file() {
                cell.quota.files_changed(meta.len(), 0);
            }
        }
    }
    sync_parent(files, path)
}

fn parent_of(path: &str) -> Option<&Path> {
    Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
}

/// A rename or removal survives a power cut only once its directory is on
/// disk. Opened read-only: directory handles may not allow fsync.
fn sync_parent(files: &Dir, path: &str) -> io::Result<()> {
    files
        .open(parent_of(path).unwrap_or(Path::new(".")))?
        .sync_all()
}

/// `fs_list(prefix)`: the paths of the cell's regular files that start with
/// `prefix` (empty = all), sorted, as a MessagePack array of strings.
fn list_files(guest: &Guest<'_>, prefix: &[u8], cell: &CellFiles) -> Result<Vec<u8>, Code> {
    let prefix = match prefix {
        b"" => "",
        _ => sandbox_path(guest, prefix)?,
    };
    let (base, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    let limit = guest.max_message_bytes();
    let mut paths = Vec::new();
    let start = if base.is_empty() {
        cell.files.try_clone()
    } else {
        cell.files.open_dir(base)
    };
    let mut listing = Listing {
        prefix,
        paths: &mut paths,
        bytes: 0,
        limit,
    };
    let walked = match start {
        Ok(dir) => walk(&dir, base, &mut listing),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    };
    match walked {
        Ok(true) => {}
        Ok(false) => return Err(Code::TOO_LARGE),
        Err(e) => return Err(io_code(guest, "list", prefix, e)),
    }
    paths.sort_unstable();
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, paths.len() as u32).expect("vec write");
    for path in &paths {
        rmp::encode::write_str(&mut out, path).expect("vec write");
    }
    if out.len() as u64 > limit {
        return Err(Code::TOO_LARGE);
    }
    Ok(out)
}

/// A listing being collected, bounded by the cell's `max_message_bytes` as
/// it grows rather than once it is complete.
struct Listing<'a> {
    prefix: &'a str,
    paths: &'a mut Vec<String>,
    /// Bytes the encoded listing will take, at least.
    bytes: u64,
    limit: u64,
}

/// Collects regular files below `dir` (whose path is `at`) that match the
/// listing's prefix; false once they outgrow its limit. Symlinks are not
/// followed, so a link cannot make the walk leave the sandbox or loop.
fn walk(dir: &Dir, at: &str, listing: &mut Listing<'_>) -> io::Result<bool> {
    for entry in dir.entries()? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let path = if at.is_empty() {
            name
        } else {
            format!("{at}/{name}")
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            // Only directories that can still hold a match.
            let prefix = listing.prefix;
            if (path.starts_with(prefix) || prefix.starts_with(&path))
                && !walk(&entry.open_dir()?, &path, listing)?
            {
                return Ok(false);
            }
        } else if kind.is_file() && path.starts_with(listing.prefix) {
            // A string's header is at most 5 bytes.
            listing.bytes += path.len() as u64 + 5;
            if listing.bytes > listing.limit {
                return Ok(false);
            }
            listing.paths.push(path);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use crate::testenv;

    fn names(listing: &[u8]) -> Vec<String> {
        rmp_serde::from_slice(listing).unwrap()
    }

    #[test]
    fn files_round_trip_list_and_delete() {
        let env = testenv::Env::new();
        let fs = env.capability(super::NAME);
        let mut cell = env.cell(fs, "alpha");

        assert_eq!(
            cell.call(fs, "fs_write", &[b"notes/a.txt", b"hello"], false),
            Ok(vec![])
        );
        assert_eq!(
            cell.call(fs, "fs_read", &[b"notes/a.txt"], true),
            Ok(b"hello".to_vec())
        );
        let on_disk = std::fs::read(env.dir.path().join("alpha/files/notes/a.txt")).unwrap();
        assert_eq!(on_disk, b"hello");
        assert_eq!(
            cell.call(fs, "fs_write", &[b"b.txt", b""], false),
            Ok(vec![])
        );
        let all = cell.call(fs, "fs_list", &[b""], true).unwrap();
        assert_eq!(names(&all), ["b.txt", "notes/a.txt"]);
        let notes = cell.call(fs, "fs_list", &[b"notes/"], true).unwrap();
        assert_eq!(names(&notes), ["notes/a.txt"]);
        assert_eq!(
            cell.call(fs, "fs_delete", &[b"notes/a.txt"], false),
            Ok(vec![])
        );
        assert_eq!(cell.call(fs, "fs_read", &[b"notes/a.txt"], true), Err(6));
        assert_eq!(cell.call(fs, "fs_delete", &[b"notes/a.txt"], false), Err(6));
    }

    #[test]
    fn paths_that_cannot_name_a_file_inside_are_refused() {
        let env = testenv::Env::new();
        let fs = env.capability(super::NAME);
        let mut cell = env.cell(fs, "alpha");
        std::fs::write(env.dir.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(
            env.dir.path().join("secret"),
            env.dir.path().join("alpha/files/link"),
        )
        .unwrap();

        let refused: [&[u8]; 6] = [
            b"/etc/passwd",
            b"../secret",
            b"a/../../secret",
            b"a\0b",
            b"link",
            b"..",
        ];
        for path in refused {
            assert_eq!(cell.call(fs, "fs_read", &[path], true), Err(4), "{path:?}");
            assert_eq!(
                cell.call(fs, "fs_write", &[path, b"x"], false),
                Err(4),
                "{path:?}"
            );
        }
        assert_eq!(cell.call(fs, "fs_read", &[b""], true), Err(1));
        assert_eq!(cell.call(fs, "fs_read", &[b"\xff"], true), Err(3));
        assert_eq!(
            std::fs::read(env.dir.path().join("secret")).unwrap(),
            b"outside"
        );
    }

    #[test]
    fn each_cell_has_its_own_files() {
        let env = testenv::Env::new();
        let fs = env.capability(super::NAME);
        let mut alpha = env.cell(fs, "alpha");
        let mut beta = env.cell(fs, "beta");

        assert_eq!(
            alpha.call(fs, "fs_write", &[b"doc", b"alpha's"], false),
            Ok(vec![])
        );
        assert_eq!(beta.call(fs, "fs_read", &[b"doc"], true), Err(6));
        assert_eq!(
            beta.call(fs, "fs_read", &[b"../alpha/files/doc"], true),
            Err(4)
        );
        assert!(names(&beta.call(fs, "fs_list", &[b""], true).unwrap()).is_empty());
    }

    #[test]
    fn lying_pointers_and_lengths_get_codes_and_touch_nothing() {
        let env = testenv::Env::new();
        let fs = env.capability(super::NAME);
        let mut cell = env.cell(fs, "alpha");
        let end = testenv::MEMORY_BYTES as u64;
        let negative = u64::from(u32::MAX);
        let over_limit = 64 * 1024 + 1;
        let [path, path_len] = cell.place(b"doc");
        let [data, data_len] = cell.place(b"x");

        // fs_write(path, data): a pair past memory, negative, or over the limit.
        for (args, code) in [
            ([end - 1, 2, data, data_len], 2),
            ([negative, path_len, data, data_len], 2),
            ([path, negative, data, data_len], 2),
            ([path, path_len, end, 1], 2),
            ([path, over_limit, data, data_len], 9),
            ([path, path_len, data, over_limit], 9),
        ] {
            assert_eq!(cell.call_raw(fs, "fs_write", &args), code, "{args:?}");
        }
        assert!(!env.dir.path().join("alpha/files/doc").exists());

        // fs_read(path, out_ptr_ptr, out_len_ptr): out-pointers outside memory.
        assert_eq!(
            cell.call_raw(fs, "fs_write", &[path, path_len, data, data_len]),
            0
        );
        for [ptr_out, len_out] in [[end, 0], [0, end - 2], [negative, 0]] {
            let args = [path, path_len, ptr_out, len_out];
            assert_eq!(cell.call_raw(fs, "fs_read", &args), 2, "{args:?}");
        }
        assert_eq!(cell.call(fs, "fs_read", &[b"doc"], true), Ok(b"x".to_vec()));
    }
}
