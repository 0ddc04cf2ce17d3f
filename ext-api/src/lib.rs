//! The interface between the Pulp host and its capabilities.
//!
//! A capability is a named bundle of host imports (functions in the wasm import module
//! `pulp`) plus optional lifecycle hooks. Capabilities compiled into the host and those
//! shipped in extension libraries implement the same [`Capability`] trait and reach the
//! host through the same ABI-stable object, [`CapabilityHandle`]; only this crate knows
//! how that object is built, so extension authors never touch the mechanism.
//!
//! # A complete extension
//!
//! ```no_run
//! // Cargo.toml: crate-type = ["cdylib"], edition = "2021",
//! // dependencies: pulp-ext-api, tracing.
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! use pulp_ext_api::{Capability, CellState, Code, HostImport, SetupEnv, ValType};
//!
//! struct Shout;
//!
//! /// What the capability keeps for each cell: the host holds it with the cell.
//! struct Shouts(AtomicU64);
//!
//! impl Capability for Shout {
//!     fn name(&self) -> &str {
//!         "example.shout"
//!     }
//!
//!     fn provider(&self) -> &str {
//!         "pulp-ext-example"
//!     }
//!
//!     fn setup(&self, _env: &SetupEnv) -> Result<CellState, String> {
//!         Ok(CellState::new(Shouts(AtomicU64::new(0))))
//!     }
//!
//!     fn imports(&self) -> Vec<HostImport> {
//!         // shout(msg_ptr: i32, msg_len: i32) -> i32
//!         vec![HostImport::new("shout", &[ValType::I32, ValType::I32], |guest, args| {
//!             let msg = guest.read_str_arg(args, 0)?;
//!             if msg.is_empty() {
//!                 return Err(Code::EMPTY);
//!             }
//!             let count = guest.state::<Shouts>()?.0.fetch_add(1, Ordering::Relaxed) + 1;
//!             // Lands in the host's log, tagged with this extension and the cell.
//!             tracing::info!(cell = guest.cell(), "{}! ({count})", msg.to_uppercase());
//!             Ok(())
//!         })]
//!     }
//! }
//!
//! fn capabilities() -> Vec<Box<dyn Capability>> {
//!     vec![Box::new(Shout)]
//! }
//!
//! pulp_ext_api::export_extension!(capabilities);
//! ```
//!
//! List the built library in the host's `extensions.toml`, declare `example.shout` in a
//! cell's manifest, and the cell can import `pulp.shout`.
//!
//! # Rules the boundary keeps
//!
//! - Every function that crosses it catches panics: a panicking import returns code 5
//!   and the panic is logged; a panicking hook fails that hook only.
//! - The root module and every vtable are prefix types: later versions of this crate
//!   append fields, so libraries built against an earlier 1.x keep loading.
//! - The interface has its own version, [`INTERFACE_VERSION`], separate from crate
//!   versions; the host refuses a library built for another major version, or for a
//!   newer minor one.
//! - Per-cell state belongs to the host (interface 1.1): [`Capability::setup`] returns
//!   it as a [`CellState`], imports reach it with [`Guest::state`], and
//!   `cell_failed`/`teardown_cell` are handed it; a library built for 1.0 keeps its
//!   own, and loads all the same.
//! - An extension that needs async owns its runtime; no runtime handle crosses.

mod capability;
mod code;
mod guest;
mod host;
mod logging;
mod state;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use abi_stable::abi_stability::abi_checking::{
    check_layout_compatibility_with_globals, CheckingGlobals,
};
use abi_stable::library::{lib_header_from_path, LibraryError, RootModule};
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RString, RVec};
use abi_stable::{declare_root_module_statics, StableAbi};

pub use capability::{
    Capability, CapabilityFfi, CapabilityHandle, HostImport, ImportHandle, SetupEnv, StepEvent,
    ValType,
};
pub use code::{Args, Code, ImportResult};
pub use guest::{Guest, GuestMemory};
pub use host::{DeliverError, HostHandle, HostServices, Level};
pub use state::{CellState, CellStateHandle};

/// The version of this interface (not of any crate): `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceVersion {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for InterfaceVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The interface this build of ext-api provides.
pub const INTERFACE_VERSION: InterfaceVersion = InterfaceVersion { major: 1, minor: 1 };

/// [`INTERFACE_VERSION`] as the `major.minor.patch` string stored in every library.
const INTERFACE_VERSION_STRING: &str = "1.1.0";

/// The root module every extension library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ExtensionRootRef)))]
#[sabi(missing_field(panic))]
pub struct ExtensionRoot {
    #[sabi(last_prefix_field)]
    init: extern "C" fn(host: HostHandle) -> RResult<RVec<CapabilityFfi>, RString>,
}

impl RootModule for ExtensionRootRef {
    declare_root_module_statics! {ExtensionRootRef}
    const BASE_NAME: &'static str = "pulp_ext";
    const NAME: &'static str = "pulp extension";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(INTERFACE_VERSION_STRING);
}

/// Why a library could not be loaded. The host adds the file name and what to do.
#[derive(Debug)]
pub enum LoadError {
    /// The OS loader refused the file: missing, not a shared library, wrong architecture.
    NotLoadable(String),
    /// A shared library, but not a Pulp extension.
    NoRootModule,
    /// Built against another interface version.
    Incompatible { built_for: String },
    /// The version matches but the types do not: built from a modified interface.
    Layout(String),
    /// The library's own initialisation failed or panicked.
    Init(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotLoadable(e) => write!(f, "not a loadable library: {e}"),
            LoadError::NoRootModule => write!(f, "no Pulp root module (not a Pulp extension)"),
            LoadError::Incompatible { built_for } => write!(
                f,
                "built for ext-api interface {built_for}, this host provides {INTERFACE_VERSION}"
            ),
            LoadError::Layout(e) => write!(
                f,
                "its interface types do not match ext-api {INTERFACE_VERSION}: {e}"
            ),
            LoadError::Init(e) => write!(f, "initialisation failed: {e}"),
        }
    }
}

fn parse_version(raw: &str) -> Option<InterfaceVersion> {
    let mut parts = raw.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some(InterfaceVersion { major, minor })
}

/// A library built for `library` loads in a host providing `host`: same major, and
/// no newer minor (the host would lack what the library expects of it).
fn compatible(library: InterfaceVersion, host: InterfaceVersion) -> bool {
    library.major == host.major && library.minor <= host.minor
}

/// A library loaded by [`load_library`].
pub struct Library {
    /// The interface version the library was built for.
    pub interface: InterfaceVersion,
    pub capabilities: Vec<CapabilityHandle>,
}

/// Loads the extension library at `path` on its own — never through a per-type
/// cache, since every library shares one root module type — and returns its
/// capabilities. The library is never unloaded. `host` is the extension's logger.
pub fn load_library(path: &Path, host: HostHandle) -> Result<Library, LoadError> {
    let header = lib_header_from_path(path).map_err(|e| match e {
        LibraryError::OpenError { err, .. } => LoadError::NotLoadable(err.to_string()),
        LibraryError::GetSymbolError { .. } => LoadError::NoRootModule,
        LibraryError::InvalidAbiHeader(header) => LoadError::Incompatible {
            built_for: format!("(abi_stable header {header:?})"),
        },
        other => LoadError::NotLoadable(other.to_string()),
    })?;
    let built_for = header.version_strings().version.as_str().to_owned();
    let version = match parse_version(&built_for) {
        Some(v) if compatible(v, INTERFACE_VERSION) => v,
        Some(v) => {
            return Err(LoadError::Incompatible {
                built_for: v.to_string(),
            })
        }
        None => return Err(LoadError::Incompatible { built_for }),
    };
    let layout_error = |e: &dyn fmt::Display| LoadError::Layout(first_line(&e.to_string()));
    let root = if version == INTERFACE_VERSION {
        header.init_root_module::<ExtensionRootRef>()
    } else {
        // An earlier 1.x: its vtables are prefixes of ours. abi_stable's own check
        // wants the interface no newer than the library, so it is run the other
        // way round: the library's layout as the interface this host implements,
        // with a record of prefix types of its own so that libraries of this
        // version are still checked against ours alone.
        let theirs = header
            .layout()
            .ok_or_else(|| LoadError::Layout("the library carries no type layout".into()))?;
        check_layout_compatibility_with_globals(
            theirs,
            <ExtensionRootRef as StableAbi>::LAYOUT,
            &CheckingGlobals::new(),
        )
        .map_err(|e| layout_error(&e))?;
        // SAFETY: the layouts were checked just above, in the direction that fits.
        unsafe { header.init_root_module_with_unchecked_layout::<ExtensionRootRef>() }
    }
    .map_err(|e| match e {
        LibraryError::AbiInstability(e) => layout_error(&e),
        other => LoadError::Init(other.to_string()),
    })?;
    let capabilities = (root.init())(host)
        .into_result()
        .map_err(|e| LoadError::Init(e.into()))?;
    let capabilities = capabilities
        .into_iter()
        .map(|ffi| CapabilityHandle::from_ffi(ffi).map_err(LoadError::Init))
        .collect::<Result<_, _>>()?;
    Ok(Library {
        interface: version,
        capabilities,
    })
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[doc(hidden)]
pub mod __private {
    pub use abi_stable::library::{
        __call_root_module_loader, CheckTypeLayout, IntoRootModuleResult, LibHeader,
        RootModuleResult,
    };
    pub use abi_stable::prefix_type::PrefixTypeTrait;
    pub use abi_stable::std_types::{RResult, RString, RVec};

    use super::*;

    /// The symbol abi_stable looks up in every library (checked by a test).
    pub const ROOT_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

    pub fn root_module(
        init: extern "C" fn(host: HostHandle) -> RResult<RVec<CapabilityFfi>, RString>,
    ) -> ExtensionRootRef {
        ExtensionRoot { init }.leak_into_prefix()
    }

    /// The body of a library's `init`: logging first, then the author's capabilities.
    pub fn run_init(
        host: HostHandle,
        capabilities: fn() -> Vec<Box<dyn Capability>>,
    ) -> RResult<RVec<CapabilityFfi>, RString> {
        crate::logging::install(host);
        // The library's own copy of std prints panics to stderr by default; send them
        // to the host log instead, where they carry the extension's name.
        std::panic::set_hook(Box::new(|info| tracing::error!("{info}")));
        match catch_unwind(AssertUnwindSafe(capabilities)) {
            Ok(list) => RResult::ROk(list.into_iter().map(CapabilityFfi::from_box).collect()),
            Err(_) => RResult::RErr("the extension's capabilities() panicked".into()),
        }
    }
}

/// Exports an extension library's root module.
///
/// Takes the path of a `fn() -> Vec<Box<dyn Capability>>`; use it once, at the
/// crate root of a `cdylib`.
#[macro_export]
macro_rules! export_extension {
    ($capabilities:path) => {
        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static PULP_EXTENSION_ROOT: $crate::__private::LibHeader = {
            extern "C" fn init(
                host: $crate::HostHandle,
            ) -> $crate::__private::RResult<
                $crate::__private::RVec<$crate::CapabilityFfi>,
                $crate::__private::RString,
            > {
                $crate::__private::run_init(host, $capabilities)
            }
            fn root() -> $crate::ExtensionRootRef {
                $crate::__private::root_module(init)
            }
            extern "C" fn load() -> $crate::__private::RootModuleResult {
                $crate::__private::__call_root_module_loader(root)
            }
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::ExtensionRootRef>(
                    load,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_symbol_matches_abi_stable() {
        assert_eq!(
            super::__private::ROOT_SYMBOL,
            abi_stable_shared::mangled_root_module_loader_name()
        );
    }

    #[test]
    fn versions_parse() {
        assert_eq!(
            super::parse_version(super::INTERFACE_VERSION_STRING),
            Some(super::INTERFACE_VERSION)
        );
        assert_eq!(super::parse_version("x.1"), None);
    }

    #[test]
    fn compatibility() {
        use super::{compatible, InterfaceVersion as V};
        let host = V { major: 1, minor: 2 };
        assert!(compatible(V { major: 1, minor: 0 }, host));
        assert!(compatible(V { major: 1, minor: 2 }, host));
        assert!(!compatible(V { major: 1, minor: 3 }, host));
        assert!(!compatible(V { major: 0, minor: 9 }, host));
        assert!(!compatible(V { major: 2, minor: 0 }, host));
    }
}
