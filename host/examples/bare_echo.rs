//! The baselines for `scripts/bench-http.sh`: `GET /echo/:msg` answered with
//! the same bytes the `echo` cell returns, on the same kind of runtime the
//! host's listener uses (two worker threads) and with the same allocator.
//! By a bare axum server, or with `--pulp-listener` by the host's own
//! listener (`transport::serve`: connection cap, first-byte and header
//! timeouts) with no cell behind it, which shows what the listener costs and
//! what the cell adds.
//!
//! Run: `cargo run --release -p pulp-host --example bare_echo -- PORT [--pulp-listener]`

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::routing::get;
use pulp_host::transport::{ListenerLimits, serve};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .expect("usage: bare_echo PORT [--pulp-listener]");
    let pulp_listener = args.next().as_deref() == Some("--pulp-listener");
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
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        if pulp_listener {
            let stop = axum_server::Handle::new();
            let server = serve(app, addr, None, &ListenerLimits::default(), stop)
                .await
                .expect("listen");
            server.await.expect("serve");
        } else {
            let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
            axum::serve(listener, app).await.expect("serve");
        }
    });
}
