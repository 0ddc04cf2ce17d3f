//! Loading extension libraries: every failure is one clear line and exit 1;
//! provider pins; swapping a library; `pulp ext list`.

use std::process::ExitStatus;

use pulp_e2e::{Pulp, Scratch, cell, library, run};
use sha2::{Digest, Sha256};

/// Runs the hello cell (declares demo.greet) against `exts/` and returns the outcome.
fn start_hello(scratch: &Scratch) -> (ExitStatus, String) {
    run(&scratch.args(&[cell("hello")]))
}

/// Asserts a start-up failure: exit 1, and one error line holding every needle.
fn assert_load_error(outcome: (ExitStatus, String), needles: &[&str]) {
    let (status, log) = outcome;
    assert_eq!(status.code(), Some(1), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{log}");
    for needle in needles {
        assert!(
            errors[0].contains(needle),
            "{needle:?} not in {:?}",
            errors[0]
        );
    }
}

fn demo_entry(library: &str) -> String {
    format!("[[extension]]\nname = \"demo\"\nlibrary = \"{library}\"\n")
}

#[test]
fn missing_library_file() {
    let scratch = Scratch::new();
    scratch.write("exts/extensions.toml", demo_entry("pulp_ext_nowhere"));
    assert_load_error(
        start_hello(&scratch),
        &[
            "extension \"demo\"",
            "library file not found",
            "libpulp_ext_nowhere.so",
            "build it or fix `library`",
        ],
    );
}

#[test]
fn a_file_that_is_not_a_library() {
    let scratch = Scratch::new();
    scratch.write("exts/libjunk.so", "this is not an ELF file\n");
    scratch.write("exts/extensions.toml", demo_entry("junk"));
    assert_load_error(
        start_hello(&scratch),
        &[
            "libjunk.so",
            "not a loadable library",
            "cdylib built for this platform",
        ],
    );
}

#[test]
fn a_library_without_a_pulp_root_module() {
    let scratch = Scratch::new();
    scratch.install("pulp-fixture-ext-not-pulp", "libplain.so");
    scratch.write("exts/extensions.toml", demo_entry("plain"));
    assert_load_error(
        start_hello(&scratch),
        &["libplain.so", "no Pulp root module", "export_extension!"],
    );
}

#[test]
fn a_library_built_for_another_interface_version() {
    let scratch = Scratch::new();
    scratch.install("pulp-fixture-ext-old-interface", "libold.so");
    scratch.write("exts/extensions.toml", demo_entry("old"));
    assert_load_error(
        start_hello(&scratch),
        &[
            "libold.so",
            "built for ext-api interface 0.9",
            "this host provides 1.1",
            "rebuild it against ext-api 1.1",
        ],
    );
}

#[test]
fn sha256_pins_are_enforced() {
    let scratch = Scratch::new();
    let lib = scratch.install("pulp-ext-demo", "libpulp_ext_demo.so");
    let actual = hex::encode(Sha256::digest(std::fs::read(&lib).unwrap()));
    let wrong = "0".repeat(64);
    scratch.write(
        "exts/extensions.toml",
        format!("{}sha256 = \"{wrong}\"\n", demo_entry("pulp_ext_demo")),
    );
    assert_load_error(
        start_hello(&scratch),
        &[
            "libpulp_ext_demo.so",
            &format!("has sha256 {actual}"),
            &format!("pins {wrong}"),
        ],
    );

    // The right pin loads.
    scratch.write(
        "exts/extensions.toml",
        format!("{}sha256 = \"{actual}\"\n", demo_entry("pulp_ext_demo")),
    );
    let hello = cell("hello");
    let pulp = Pulp::start(&scratch.args(&[hello]));
    pulp.wait_for(&["hello, pulp! (cell hello)"]);
}

fn two_greeters(scratch: &Scratch) {
    scratch.install("pulp-ext-demo", "libpulp_ext_demo.so");
    scratch.install("pulp-fixture-ext-greet-v2", "libgreet_v2.so");
    scratch.write(
        "exts/extensions.toml",
        "[[extension]]\nname = \"demo\"\nlibrary = \"pulp_ext_demo\"\n\n\
         [[extension]]\nname = \"v2\"\nlibrary = \"greet_v2\"\n",
    );
}

#[test]
fn two_providers_need_a_pin() {
    let scratch = Scratch::new();
    two_greeters(&scratch);
    assert_load_error(
        start_hello(&scratch),
        &[
            "cell hello",
            "capability \"demo.greet\" has 2 providers",
            "\"pulp-ext-demo\" from extension \"demo\"",
            "\"pulp-fixture-greet-v2\" from extension \"v2\"",
            "[providers]",
        ],
    );
}

#[test]
fn a_pin_picks_one_of_two_providers() {
    let scratch = Scratch::new();
    two_greeters(&scratch);
    for (provider, greeting) in [
        ("pulp-fixture-greet-v2", "howdy, pulp!"),
        ("pulp-ext-demo", "hello, pulp!"),
    ] {
        let manifest = scratch.manifest_variant("hello", "hello.toml", |t| {
            format!("{t}\n[providers]\n\"demo.greet\" = \"{provider}\"\n")
        });
        let pulp = Pulp::start(&scratch.args(&[manifest]));
        pulp.wait_for(&[greeting, "(cell hello)"]);
    }

    // A pin to a provider that does not offer the capability is refused.
    let bad = scratch.manifest_variant("hello", "bad-pin.toml", |t| {
        format!("{t}\n[providers]\n\"demo.greet\" = \"pulp-nobody\"\n")
    });
    let (status, log) = run(&scratch.args(&[bad]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("pins \"demo.greet\" to \"pulp-nobody\", which does not provide it"),
        "{log}"
    );
}

#[test]
fn a_declared_capability_nobody_provides() {
    let scratch = Scratch::new();
    scratch.write("exts/extensions.toml", "");
    assert_load_error(
        start_hello(&scratch),
        &[
            "cell hello",
            "capability \"demo.greet\" is declared but nothing provides it",
            "load the extension",
        ],
    );
}

#[test]
fn swapping_the_library_file_changes_behaviour_after_restart() {
    let scratch = Scratch::new();
    scratch.install("pulp-ext-demo", "libgreeter.so");
    scratch.write("exts/extensions.toml", demo_entry("greeter"));
    let exts = scratch.ext_dir();
    let args = scratch.args(&[cell("hello")]);
    let first = Pulp::start(&args);
    first.wait_for(&["hello, pulp! (cell hello)"]);
    let (status, _) = first.stop("TERM");
    assert!(status.success());

    // Replace the file (a new inode, as a deploy would), same name, same config.
    std::fs::remove_file(exts.join("libgreeter.so")).unwrap();
    std::fs::copy(
        library("pulp-fixture-ext-greet-v2"),
        exts.join("libgreeter.so"),
    )
    .unwrap();
    let second = Pulp::start(&args);
    second.wait_for(&["howdy, pulp! (cell hello)"]);
    assert!(!second.log().contains("hello, pulp!"));
}

#[test]
fn ext_list_prints_builtin_and_loaded_capabilities() {
    let scratch = Scratch::new();
    scratch.install("pulp-ext-demo", "libpulp_ext_demo.so");
    scratch.write("exts/extensions.toml", demo_entry("pulp_ext_demo"));
    let exts = scratch.ext_dir();
    let (status, out) = run(&["ext", "list", "-ext-dir", exts.to_str().unwrap()]);
    assert!(status.success(), "{out}");
    assert!(
        out.contains("core.log  provider=pulp  from built-in"),
        "{out}"
    );
    assert!(out.contains("    log(i32, i32, i32) -> i32"), "{out}");
    assert!(
        out.contains("demo.greet  provider=pulp-ext-demo  from extension \"demo\""),
        "{out}"
    );
    assert!(out.contains("    demo_greet(i32, i32) -> i32"), "{out}");
    assert!(out.contains("demo.ticker  provider=pulp-ext-demo"), "{out}");
}

#[test]
fn a_malformed_extensions_file() {
    let scratch = Scratch::new();
    scratch.write(
        "exts/extensions.toml",
        format!("{}libary = \"typo\"\n", demo_entry("pulp_ext_demo")),
    );
    assert_load_error(
        start_hello(&scratch),
        &["extensions.toml", "unknown field `libary`"],
    );

    scratch.install("pulp-ext-demo", "libpulp_ext_demo.so");
    scratch.write(
        "exts/extensions.toml",
        format!(
            "{}\n{}",
            demo_entry("pulp_ext_demo"),
            demo_entry("pulp_ext_demo")
        ),
    );
    assert_load_error(start_hello(&scratch), &["two entries are named \"demo\""]);
}
