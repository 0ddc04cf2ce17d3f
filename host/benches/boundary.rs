//! What crossing into the host costs a cell.
//!
//! - `import/builtin` vs `import/dylib`: one `pulp_step` that calls a no-op host
//!   import 1000 times, the import compiled into the host or loaded from the
//!   `ext-demo` library. Both go through the same `Capability` boundary object.
//! - `step/tick` and `step/event`: one step round trip, empty and with a small event.
//! - `call/cell`: one `pulp_step` that calls a no-op function of another cell
//!   1000 times through `pulp_call` (`consumes`/`provides`), to set beside
//!   `import/builtin`.
//!
//! Run: `cargo bench -p pulp-host --bench boundary`

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use pulp_ext_api::{Capability, CapabilityHandle, HostImport};
use pulp_host::registry::{Properties, Registry};
use pulp_host::runtime::{Host, Instance, Runtime, prepare};
use pulp_host::{builtin, extensions};

const CALLS_PER_STEP: u32 = 1000;

struct BenchNoop;

impl Capability for BenchNoop {
    fn name(&self) -> &str {
        "bench.noop"
    }

    fn provider(&self) -> &str {
        builtin::PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        vec![HostImport::new("bench_noop", &[], |_, _| Ok(()))]
    }
}

/// A cell whose every step calls `import` CALLS_PER_STEP times (0: never).
fn cell_wat(import: Option<&str>) -> String {
    let (decl, body) = match import {
        Some(name) => (
            format!(r#"(import "pulp" "{name}" (func $f (result i32)))"#),
            format!(
                "(local $n i32) (local.set $n (i32.const {CALLS_PER_STEP}))
                 (loop $l (drop (call $f))
                   (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))"
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"(module {decl}
            (memory (export "memory") 1)
            (global $next (mut i32) (i32.const 1024))
            (func (export "pulp_alloc") (param $size i32) (result i32)
              (global.get $next)
              (global.set $next (i32.add (global.get $next) (local.get $size))))
            (func (export "pulp_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "pulp_step") (param i32 i32) (result i32) {body} i32.const 0))"#
    )
}

/// A cell whose every step calls `noop` of cell `callee` CALLS_PER_STEP times.
fn caller_wat() -> String {
    format!(
        r#"(module
            (import "pulp" "pulp_call"
              (func $call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "callee")
            (data (i32.const 8) "noop")
            (func (export "pulp_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "pulp_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "pulp_step") (param i32 i32) (result i32)
              (local $n i32) (local.set $n (i32.const {CALLS_PER_STEP}))
              (loop $l
                (drop (call $call (i32.const 0) (i32.const 6) (i32.const 8) (i32.const 4)
                                  (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 20)))
                (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
              i32.const 0))"#
    )
}

/// A cell that provides `noop`: an empty result. Its allocator wraps around,
/// since the host allocates a call's name and out-slots on every call.
const CALLEE_WAT: &str = r#"(module
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (func (export "pulp_alloc") (param $size i32) (result i32) (local $at i32)
      (local.set $at (global.get $next))
      (if (i32.gt_u (i32.add (local.get $at) (local.get $size)) (i32.const 60000))
        (then (local.set $at (i32.const 1024))))
      (global.set $next (i32.add (local.get $at) (i32.add (local.get $size) (i32.const 8))))
      (local.get $at))
    (func (export "pulp_init") (param i32 i32) (result i32) i32.const 0)
    (func (export "pulp_step") (param i32 i32) (result i32) i32.const 0)
    (func (export "pulp_on_call") (param i32 i32 i32 i32 i32 i32) (result i32) i32.const 0))"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The demo extension, built in release mode like the bench itself.
fn demo_extension(dir: &Path) -> PathBuf {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "pulp-ext-demo"])
        .current_dir(workspace())
        .status()
        .expect("run cargo");
    assert!(status.success(), "building ext-demo failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let config = dir.join("extensions.toml");
    std::fs::write(
        &config,
        format!(
            "[[extension]]\nname = \"demo\"\nlibrary = {:?}\n",
            target
                .join("release")
                .join("libpulp_ext_demo.so")
                .display()
                .to_string()
        ),
    )
    .unwrap();
    config
}

fn instance(
    runtime: &Arc<Runtime>,
    registry: &Registry,
    dir: &Path,
    name: &str,
    caps: &str,
    import: Option<&str>,
) -> Instance {
    let manifest = support::cell(
        dir,
        name,
        &cell_wat(import),
        &format!("capabilities = [{caps}]"),
    );
    let spec = prepare(runtime, registry, &manifest, 1).unwrap();
    Instance::start(runtime, &spec).unwrap()
}

fn boundary(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_extension(dir.path());
    let loaded = extensions::load(&config, None).unwrap();
    let bench = support::Bench::new();
    let runtime = &bench.runtime;
    let mut builtins = builtin::all(&bench.services);
    builtins.push((
        CapabilityHandle::builtin(BenchNoop).unwrap(),
        Properties::default(),
    ));
    let registry = Arc::new(Registry::new(builtins, loaded).unwrap());

    let mut builtin_cell = instance(
        runtime,
        &registry,
        dir.path(),
        "builtin",
        "\"bench.noop\"",
        Some("bench_noop"),
    );
    let mut dylib_cell = instance(
        runtime,
        &registry,
        dir.path(),
        "dylib",
        "\"demo.greet\"",
        Some("demo_noop"),
    );
    let mut plain_cell = instance(runtime, &registry, dir.path(), "plain", "", None);

    // Both cells run in a host, so the directory knows them; the bench steps
    // its own instance of the caller.
    let manifests = [
        support::cell(dir.path(), "caller", &caller_wat(), "consumes = [\"noop\"]"),
        support::cell(dir.path(), "callee", CALLEE_WAT, "provides = [\"noop\"]"),
    ];
    let caller_spec = prepare(runtime, &registry, &manifests[0], 1).unwrap();
    let host = Host::start(
        Arc::clone(runtime),
        Arc::clone(&registry),
        manifests.to_vec(),
        &dir.path().join("data"),
    )
    .unwrap();
    let mut caller = Instance::start(runtime, &caller_spec).unwrap();

    let mut group = c.benchmark_group("import");
    group.bench_function("builtin", |b| b.iter(|| builtin_cell.step(None).unwrap()));
    group.bench_function("dylib", |b| b.iter(|| dylib_cell.step(None).unwrap()));
    group.finish();

    // {seq: 1, cell: "bench"}: about the size of a demo.ticker event.
    let payload = b"\x82\xa3seq\x01\xa4cell\xa5bench";
    let mut group = c.benchmark_group("step");
    group.bench_function("tick", |b| b.iter(|| plain_cell.step(None).unwrap()));
    group.bench_function("event", |b| {
        b.iter(|| plain_cell.step(Some(("bench.event", payload))).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("call");
    group.bench_function("cell", |b| b.iter(|| caller.step(None).unwrap()));
    group.finish();
    drop(caller);
    host.shutdown();
}

criterion_group!(benches, boundary);
criterion_main!(benches);
