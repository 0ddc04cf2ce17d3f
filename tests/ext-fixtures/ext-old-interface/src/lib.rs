//! Test library: what an extension built against an old, incompatible Pulp
//! interface (0.9) looks like to the loader. It uses abi_stable directly because
//! no ext-api of that version exists in this workspace.

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::RString;
use abi_stable::{declare_root_module_statics, export_root_module, StableAbi};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = OldRootRef)))]
#[sabi(missing_field(panic))]
pub struct OldRoot {
    #[sabi(last_prefix_field)]
    pub name: extern "C" fn() -> RString,
}

impl RootModule for OldRootRef {
    declare_root_module_statics! {OldRootRef}
    const BASE_NAME: &'static str = "pulp_ext";
    const NAME: &'static str = "pulp extension";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.9.0");
}

extern "C" fn name() -> RString {
    "old".into()
}

#[export_root_module]
pub fn root() -> OldRootRef {
    OldRoot { name }.leak_into_prefix()
}
