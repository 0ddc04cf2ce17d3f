//! Confines a cell's keys to `<cell>/` in the bucket.
//!
//! A key is `/`-separated segments, each non-empty, neither `.` nor `..`, and free
//! of control characters. That refuses `..` and absolute keys, and also the keys
//! that the store's path type would silently rewrite (`a//b`, `a/`), so the key a
//! cell names is exactly the object it reaches.

use object_store::path::Path;

/// Why a key was refused (code 4).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub &'static str);

/// The bucket path of `key` for `cell`.
pub fn object(cell: &str, key: &str) -> Result<Path, Refused> {
    check(key)?;
    Path::parse(format!("{cell}/{key}")).map_err(|_| Refused("not a valid object key"))
}

/// Strips `<cell>/` from a key the store listed; `None` for anything outside it.
pub fn strip<'a>(cell: &str, location: &'a str) -> Option<&'a str> {
    location.strip_prefix(cell)?.strip_prefix('/')
}

fn check(key: &str) -> Result<(), Refused> {
    if key.is_empty() {
        return Err(Refused("empty key"));
    }
    if key.starts_with('/') {
        return Err(Refused("absolute key"));
    }
    if key.chars().any(char::is_control) {
        return Err(Refused("control character in key"));
    }
    for segment in key.split('/') {
        match segment {
            ".." => return Err(Refused("`..` in key")),
            "." => return Err(Refused("`.` in key")),
            "" => return Err(Refused("empty segment in key")),
            _ => {}
        }
    }
    Ok(())
}

/// A listing prefix: empty (everything) or a key-like string whose last segment
/// may be partial (`notes/2024-`).
pub fn check_prefix(prefix: &str) -> Result<(), Refused> {
    if prefix.is_empty() {
        return Ok(());
    }
    // `notes/` is a fine prefix; check it as the key it is the start of.
    let probe = match prefix.strip_suffix('/') {
        Some(dir) => dir,
        None => prefix,
    };
    check(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_under_the_cell() {
        assert_eq!(
            object("alpha", "a/b.txt").unwrap().as_ref(),
            "alpha/a/b.txt"
        );
        assert_eq!(
            object("alpha", "100%..x").unwrap().as_ref(),
            "alpha/100%..x"
        );
        assert_eq!(strip("alpha", "alpha/a/b"), Some("a/b"));
        assert_eq!(strip("alpha", "alphabet/a"), None);
    }

    #[test]
    fn escapes_are_refused() {
        for key in [
            "",
            "/etc/passwd",
            "..",
            "../beta/x",
            "a/../../beta/x",
            "a/..",
            "./a",
            "a//b",
            "a/",
            "nul\0byte",
            "line\nbreak",
        ] {
            assert!(object("alpha", key).is_err(), "{key:?} passed");
        }
    }

    #[test]
    fn prefixes() {
        for ok in ["", "notes/", "notes/2024-", "n"] {
            assert_eq!(check_prefix(ok), Ok(()), "{ok:?}");
        }
        for bad in ["/", "../", "a/../", "/abs", "a//"] {
            assert!(check_prefix(bad).is_err(), "{bad:?} passed");
        }
    }
}
