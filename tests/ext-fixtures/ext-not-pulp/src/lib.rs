//! Test library: a loadable shared library that is not a Pulp extension.

#[no_mangle]
pub extern "C" fn not_a_pulp_extension() -> i32 {
    7
}
