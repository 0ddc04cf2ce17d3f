//! The middle row of `scripts/bench-http.sh`: the host's own listener
//! (`transport::serve`, with its connection cap and first-byte and header
//! timeouts, on the same two-worker runtime and allocator) answering
//! `GET /echo/:msg` itself, with no cell behind it. Between bare axum and the
//! echo cell, it shows what the listener costs and what the cell adds.
//!
//! Run: `cargo run --release -p pulp-host --example listener_echo -- PORT`

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::routing::get;
use pulp_host::transport::{ListenerLimits, serve};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: listener_echo PORT");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let app =
            Router::new().route(
                "/echo/{msg}",
                get(|Path(msg): Path<String>| async move {
                    ([(header::CONTENT_TYPE, "text/plain")], msg)
                }),
            );
        let stop = axum_server::Handle::new();
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        let server = serve(app, addr, None, &ListenerLimits::default(), stop)
            .await
            .expect("listen");
        server.await.expect("serve");
    });
}
