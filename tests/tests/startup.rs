//! Start-up through the real binary: the compiled-module cache (shared in
//! memory, kept on disk, rebuilt when damaged) and `pulp compile`.

use std::path::{Path, PathBuf};

use pulp_e2e::{Pulp, Scratch, cell, run};

/// Runs `manifests` until every cell has started; the log.
fn start_and_stop(scratch: &Scratch, manifests: &[PathBuf]) -> String {
    let pulp = Pulp::start(&scratch.args(manifests));
    pulp.wait_for_n(&["cell started"], manifests.len());
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
    log
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_module_is_compiled_once_and_then_loaded_from_the_cache() {
    let scratch = Scratch::new();
    let cache = scratch.path().join("data/.module-cache");
    // Two cells of one module: compiled once.
    let twin = scratch.manifest_variant("heartbeat", "twin.toml", |t| {
        t.replace("name = \"heartbeat\"", "name = \"twin\"")
    });
    let both = [cell("heartbeat"), twin];
    let log = start_and_stop(&scratch, &both);
    assert_eq!(count(&log, "module compiled in"), 1, "{log}");
    assert_eq!(entries(&cache).len(), 1);

    let log = start_and_stop(&scratch, &both);
    assert_eq!(count(&log, "module compiled in"), 0, "{log}");
    assert_eq!(
        count(&log, "module loaded from the module cache"),
        1,
        "{log}"
    );

    // Truncated, then one flipped byte: each time found, compiled again and
    // replaced, and the cell runs.
    let entry = entries(&cache).pop().unwrap();
    let good = std::fs::read(&entry).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x55;
    for damaged in [good[..good.len() / 3].to_vec(), flipped] {
        std::fs::write(&entry, damaged).unwrap();
        let log = start_and_stop(&scratch, &both);
        assert!(
            log.contains("module cache entry is truncated or corrupt"),
            "{log}"
        );
        assert_eq!(count(&log, "module compiled in"), 1, "{log}");
        assert_eq!(std::fs::read(&entry).unwrap(), good);
    }

    // --no-module-cache compiles and keeps nothing; with --module-cache it is
    // a usage error.
    let bare = Scratch::new();
    let mut args = bare.args(&[cell("heartbeat")]);
    args.push("--no-module-cache".into());
    let pulp = Pulp::start(&args);
    pulp.wait_for(&["module compiled in"]);
    pulp.wait_for(&["cell started"]);
    drop(pulp);
    assert!(entries(&bare.path().join("data/.module-cache")).is_empty());
    args.extend(["--module-cache".into(), "elsewhere".into()]);
    let (status, log) = run(&args);
    assert_eq!(status.code(), Some(2), "{log}");
}

#[test]
fn pulp_compile_warms_the_cache() {
    let scratch = Scratch::new();
    let cache = scratch.path().join("warm");
    let flags = |mut args: Vec<String>| {
        args.extend(["--module-cache".into(), cache.display().to_string()]);
        args
    };
    let mut compile = vec!["compile".to_owned()];
    compile.extend(flags(scratch.args(&[cell("heartbeat"), cell("echo")])));
    let (status, out) = run(&compile);
    assert!(status.success(), "{out}");
    assert!(out.contains("ok: cell heartbeat"), "{out}");
    assert!(out.contains("compiled"), "{out}");
    assert_eq!(entries(&cache).len(), 2);

    let pulp = Pulp::start(&flags(scratch.args(&[cell("heartbeat")])));
    pulp.wait_for(&["module loaded from the module cache", "cell=\"heartbeat\""]);
    pulp.wait_for(&["cell started"]);

    // A module that does not compile is an error naming it.
    let bad = scratch.write("bad.wasm", b"\0asm\x01\0\0\0\x01");
    let manifest = scratch.write(
        "bad.toml",
        format!(
            "name = \"bad\"\nversion = \"1\"\nwasm = {:?}\n",
            bad.display().to_string()
        ),
    );
    let mut compile = vec!["compile".to_owned()];
    compile.extend(flags(scratch.args(&[manifest])));
    let (status, out) = run(&compile);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("is not a valid wasm module"), "{out}");
}
