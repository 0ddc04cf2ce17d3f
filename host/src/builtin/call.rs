//! `pulp_call`: the always-on import through which a cell calls a function
//! another cell provides (docs/cell-abi.md). Whether a call is allowed is the
//! manifests' `consumes` and `provides`, checked on every call.

use std::sync::Arc;

use pulp_ext_api::{Capability, Code, HostImport, ValType};

use crate::runtime::calls::Directory;

pub const NAME: &str = "core.call";

pub struct Call(pub Arc<Directory>);

impl Capability for Call {
    fn name(&self) -> &str {
        NAME
    }

    fn provider(&self) -> &str {
        super::PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        let directory = Arc::clone(&self.0);
        vec![HostImport::new(
            "pulp_call",
            &[ValType::I32; 8],
            move |guest, args| {
                // Out-slots the result cannot be stored in fail the call
                // before the target does any work for it.
                for slot in [6, 7] {
                    let ptr = u32::try_from(args.i32(slot)).map_err(|_| Code::OUT_OF_BOUNDS)?;
                    guest.read(ptr, 4)?;
                }
                let target = guest.read_str_arg(args, 0)?.to_owned();
                let function = guest.read_str_arg(args, 2)?.to_owned();
                let input = guest.read_arg(args, 4)?.to_vec();
                let cell = guest.cell().to_owned();
                let result = directory.call(&cell, &target, &function, input)?;
                guest.return_bytes(args, 6, &result)
            },
        )]
    }
}
