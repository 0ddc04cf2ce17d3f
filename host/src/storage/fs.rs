//! `storage.fs`: each cell's files under `{storage-root}/{cell}/files/`.
//!
//! Every path is opened relative to a directory handle (cap-std), so the OS
//! resolution itself refuses `..` and symlinks that lead outside; the string
//! checks before it only give clearer errors and codes.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use pulp_ext_api::{Args, Capability, Code, Guest, HostImport, SetupEnv, ValType};

use super::PerCell;

pub const NAME: &str = "storage.fs";

/// Where writes are staged before the rename makes them visible; a sibling of
/// `files/` so the cell never sees half-written files.
const STAGING: &str = "files.tmp";

struct CellFiles {
    files: Dir,
    staging: Dir,
    next_temp: AtomicU64,
}

#[derive(Default)]
pub struct Files {
    cells: std::sync::Arc<PerCell<CellFiles>>,
}

impl Capability for Files {
    fn name(&self) -> &str {
        NAME
    }

    fn provider(&self) -> &str {
        crate::builtin::PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        let [read, write, delete, list] = [0, 1, 2, 3].map(|_| std::sync::Arc::clone(&self.cells));
        let i32s = |n| vec![ValType::I32; n];
        vec![
            HostImport::new("fs_read", &i32s(4), move |guest, args| {
                let cell = read.get(guest.cell())?;
                let data = read_file(guest, args, &cell)?;
                guest.return_bytes(args, 2, &data)
            }),
            HostImport::new("fs_write", &i32s(4), move |guest, args| {
                let cell = write.get(guest.cell())?;
                let path = sandbox_path(guest, args, 0)?;
                let data = guest.read_arg(args, 2)?;
                write_file(&cell, path, data).map_err(|e| io_code(guest, "write", path, e))
            }),
            HostImport::new("fs_delete", &i32s(2), move |guest, args| {
                let cell = delete.get(guest.cell())?;
                let path = sandbox_path(guest, args, 0)?;
                delete_path(&cell.files, path).map_err(|e| io_code(guest, "delete", path, e))
            }),
            HostImport::new("fs_list", &i32s(4), move |guest, args| {
                let cell = list.get(guest.cell())?;
                let listing = list_files(guest, args, &cell)?;
                guest.return_bytes(args, 2, &listing)
            }),
        ]
    }

    fn setup(&self, env: &SetupEnv) -> Result<(), String> {
        let open = |name: &str| {
            let path = env.storage_dir.join(name);
            std::fs::create_dir_all(&path)
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
        self.cells.insert(
            &env.cell,
            CellFiles {
                files,
                staging,
                next_temp: AtomicU64::new(0),
            },
        );
        Ok(())
    }

    fn teardown_cell(&self, cell: &str) {
        self.cells.remove(cell);
    }

    fn teardown(&self) {
        self.cells.clear();
    }
}

/// Reads the path argument at `args[index]` and refuses, before touching the
/// disk, what can never name a file inside the sandbox.
fn sandbox_path<'g>(guest: &'g Guest<'_>, args: Args<'_>, index: usize) -> Result<&'g str, Code> {
    let path = guest.read_str_arg(args, index)?;
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

fn read_file(guest: &Guest<'_>, args: Args<'_>, cell: &CellFiles) -> Result<Vec<u8>, Code> {
    let path = sandbox_path(guest, args, 0)?;
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

fn write_file(cell: &CellFiles, path: &str, data: &[u8]) -> io::Result<()> {
    check_link(&cell.files, path)?;
    if let Some(parent) = parent_of(path) {
        // Resolving the parent first refuses a link that leads outside, which
        // create_dir_all would only report as "exists".
        match cell.files.metadata(parent) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => cell.files.create_dir_all(parent)?,
            resolved => {
                resolved?;
            }
        }
    }
    let temp = format!("{}", cell.next_temp.fetch_add(1, Ordering::Relaxed));
    let staged = (|| {
        let mut file = cell.staging.create(&temp)?;
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
    sync_parent(&cell.files, path)
}

fn delete_path(files: &Dir, path: &str) -> io::Result<()> {
    check_link(files, path)?;
    match files.symlink_metadata(path)? {
        meta if meta.is_dir() => files.remove_dir(path)?,
        _ => files.remove_file(path)?,
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
fn list_files(guest: &Guest<'_>, args: Args<'_>, cell: &CellFiles) -> Result<Vec<u8>, Code> {
    let prefix = match guest.read_str_arg(args, 0)? {
        "" => "",
        _ => sandbox_path(guest, args, 0)?,
    };
    let (base, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    let limit = guest.max_message_bytes();
    let mut paths = Vec::new();
    let start = if base.is_empty() {
        cell.files.try_clone()
    } else {
        cell.files.open_dir(base)
    };
    let walked = match start {
        Ok(dir) => walk(&dir, base, prefix, &mut paths),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    walked.map_err(|e| io_code(guest, "list", prefix, e))?;
    paths.sort_unstable();
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, paths.len() as u32).expect("vec write");
    for path in &paths {
        rmp::encode::write_str(&mut out, path).expect("vec write");
        if out.len() as u64 > limit {
            return Err(Code::TOO_LARGE);
        }
    }
    Ok(out)
}

/// Collects regular files below `dir` (whose path is `at`) matching `prefix`.
/// Symlinks are not followed, so a link cannot make the walk leave the
/// sandbox or loop.
fn walk(dir: &Dir, at: &str, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
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
            if path.starts_with(prefix) || prefix.starts_with(&path) {
                walk(&entry.open_dir()?, &path, prefix, out)?;
            }
        } else if kind.is_file() && path.starts_with(prefix) {
            out.push(path);
        }
    }
    Ok(())
}
