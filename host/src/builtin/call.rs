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
                let text = |bytes| std::str::from_utf8(bytes).map_err(|_| Code::DECODE);
                let target = text(guest.read_arg(args, 0)?)?.to_owned();
                let function = text(guest.read_arg(args, 2)?)?.to_owned();
                let input = guest.read_arg(args, 4)?.to_vec();
                let cell = guest.cell().to_owned();
                let result = directory.call(&cell, &target, &function, input)?;
                guest.return_bytes(args, 6, &result)
            },
        )]
    }
}
