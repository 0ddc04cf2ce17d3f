//! Extension interface compatibility across minor versions: a library built
//! against the frozen ext-api 1.0 (`tests/compat/`) loads and works on this
//! host, and a host that knows only 1.0 refuses a library built for this one.

use pulp_e2e::{Pulp, Scratch, artifacts, cell, library};

#[test]
fn a_library_built_for_interface_1_0_runs_on_this_host() {
    let scratch = Scratch::new();
    scratch.install("pulp-compat-ext-demo", "libdemo_1_0.so");
    // A library of this version loads beside it, after it: checking the old
    // one leaves nothing behind that the next check trips on.
    scratch.install("pulp-ext-s3", "libpulp_ext_s3.so");
    scratch.write(
        "exts/extensions.toml",
        "[[extension]]\nname = \"demo\"\nlibrary = \"demo_1_0\"\n[extension.config]\nticker_interval_ms = 50\n\
         [[extension]]\nname = \"s3\"\nlibrary = \"pulp_ext_s3\"\n",
    );
    let pulp = Pulp::start(&scratch.args(&[cell("greeter")]));
    pulp.wait_for(&["loaded extension", "extension=\"s3\""]);
    // setup ran (its log line), an import ran, events came through poll and
    // were finalized.
    pulp.wait_for(&["ticker started for cell greeter every 50 ms"]);
    let greeting = pulp.wait_for(&["hello, pulp! (cell greeter)"]);
    assert!(greeting.contains("extension=\"demo\""), "{greeting}");
    pulp.wait_for(&["greet returned 0"]);
    pulp.wait_for(&["ticker seq=3", "cell=\"greeter\""]);
    pulp.wait_for(&["ticker finalized id=3"]);
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
    // teardown_cell and teardown reached the 1.0 library, in that order.
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing:\n{log}"))
    };
    assert!(at("cell shut down") < at("ticker stopped for cell greeter"));
    assert!(at("ticker stopped for cell greeter") < at("demo teardown:"));
}

#[test]
fn a_host_that_knows_only_1_0_refuses_a_1_1_library() {
    let loader = artifacts().lib_dir.join("pulp-compat-host");
    let output = std::process::Command::new(&loader)
        .arg(library("pulp-ext-demo"))
        .output()
        .expect("run the 1.0 loader");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("refused: built for ext-api interface 1.1, this host provides 1.0"),
        "{said}"
    );

    // The same loader takes the library built for 1.0: the refusal is about
    // the version, not the loader.
    let output = std::process::Command::new(&loader)
        .arg(library("pulp-compat-ext-demo"))
        .output()
        .expect("run the 1.0 loader");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("loaded demo.ticker"), "{said}");
}
