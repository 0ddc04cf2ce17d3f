//! `storage.s3` (provider `pulp-ext-s3`): objects in an S3-compatible bucket, each
//! cell confined to the keys under `<cell>/`, which it never sees.
//!
//! Every import takes one MessagePack request; those that return data take two
//! out-pointers (docs/extensions.md):
//!
//! | import | request | result |
//! |---|---|---|
//! | `s3_put` | `{key, body, content_type?}` | |
//! | `s3_get` | `{key}` | `{body, content_type, content_length, etag}` |
//! | `s3_head` | `{key}` | `{size, last_modified_unix}` |
//! | `s3_delete` | `{key}` | |
//! | `s3_copy` | `{src_key, dst_key}` | |
//! | `s3_list` | `{prefix, continuation_token, max_keys}` | `{entries: [{key, size, last_modified_unix}], next_continuation_token, is_truncated}` |
//! | `s3_presign` | `{key, ttl_sec}` | `{url}` |
//!
//! Codes: 4 an S3 error (network, authentication, anything else) or a refused
//! key, 6 not found, 10 no usable configuration, 11 the server answered
//! `AccessDenied`; 1, 2, 3, 7, 8 and 9 as for every import.
//!
//! Configuration: `[extension.config]` keys `endpoint`, `bucket`, `region`,
//! `access_key_id`, `secret_access_key`, `session_token`, `path_style`, each
//! falling back to `S3_*` and then the standard `AWS_*` environment variables.
//! Without a bucket the cells still load, and every import answers 10.
//!
//! S3 calls run on the library's own tokio runtime; a call holds the cell for
//! at most its `call_timeout_ms`.

mod config;
mod key;
mod ops;
mod store;

use std::sync::Arc;
use std::time::Duration;

use pulp_ext_api::{Capability, CellState, Code, Guest, HostImport, SetupEnv};

use crate::config::ExtConfig;
use crate::ops::Call;
use crate::store::CellStore;

/// What an import does once its request is read: nothing to hand back, or bytes.
enum Op {
    Unit(fn(&Call<'_>, &[u8]) -> Result<(), Code>),
    Data(fn(&Call<'_>, &[u8]) -> Result<Vec<u8>, Code>),
}

const IMPORTS: [(&str, Op); 7] = [
    ("put", Op::Unit(ops::put)),
    ("get", Op::Data(ops::get)),
    ("head", Op::Data(ops::head)),
    ("delete", Op::Unit(ops::delete)),
    ("copy", Op::Unit(ops::copy)),
    ("list", Op::Data(ops::list)),
    ("presign", Op::Data(ops::presign)),
];

/// The cell's store, or code 5 with a line saying why.
fn call<'a>(op: &'static str, guest: &'a Guest<'_>) -> Result<Call<'a>, Code> {
    let Ok(store) = guest.state::<CellStore>() else {
        tracing::error!(cell = guest.cell(), "s3_{op}: the cell was not set up");
        return Err(Code::FAILED);
    };
    Ok(Call {
        op,
        cell: guest.cell(),
        store,
        max_message_bytes: guest.max_message_bytes(),
    })
}

struct S3;

impl Capability for S3 {
    fn name(&self) -> &str {
        "storage.s3"
    }

    fn provider(&self) -> &str {
        "pulp-ext-s3"
    }

    fn imports(&self) -> Vec<HostImport> {
        IMPORTS
            .iter()
            .map(|(op, run)| {
                let (op, name) = (*op, format!("s3_{op}"));
                match *run {
                    Op::Unit(run) => HostImport::inputs(&name, move |guest, [request]| {
                        run(&call(op, guest)?, request)
                    }),
                    Op::Data(run) => HostImport::inputs_output(&name, move |guest, [request]| {
                        run(&call(op, guest)?, request)
                    }),
                }
            })
            .collect()
    }

    fn setup(&self, env: &SetupEnv) -> Result<CellState, String> {
        let config: ExtConfig = env.ext_config()?;
        let timeout = Duration::from_millis(env.call_timeout_ms.max(1));
        let client = config
            .resolve(|name| std::env::var(name).ok())
            .and_then(|settings| {
                tracing::info!(
                    cell = env.cell,
                    "storage.s3 for cell {}: bucket {} at {}, prefix {}/",
                    env.cell,
                    settings.bucket,
                    settings.endpoint.as_deref().unwrap_or("AWS"),
                    env.cell
                );
                store::build(&settings, timeout)
            });
        if let Err(reason) = &client {
            tracing::warn!(
                cell = env.cell,
                "storage.s3 is not configured; every s3_* import answers 10: {reason}"
            );
        }
        store::runtime();
        Ok(CellState::new(CellStore {
            client: client.map(Arc::new),
            timeout,
        }))
    }
}

fn capabilities() -> Vec<Box<dyn Capability>> {
    vec![Box::new(S3)]
}

pulp_ext_api::export_extension!(capabilities);
