//! The baseline for `scripts/bench-http.sh`: a bare axum handler that answers
//! `GET /echo/:msg` with the same bytes the `echo` cell returns, on the same kind of
//! runtime the host's listener uses (two worker threads) and with the same
//! allocator.
//!
//! Run: `cargo run --release -p pulp-host --example bare_echo -- PORT`

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::routing::get;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: bare_echo PORT");
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
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
}
