//! The admin listener (`--admin-addr`, docs/cli.md): what an orchestrator or a
//! load balancer asks of the host, apart from the cells' own listener.
//!
//! - `/healthz`: 200 while the process serves at all.
//! - `/readyz`: 200 when every cell has initialised and none has stopped for
//!   good, else 503; the JSON body names each cell's phase and the cells that
//!   are not ready.
//! - `/metrics`: what the host counts (see [`crate::metrics`]), in the
//!   OpenMetrics text format Prometheus scrapes.
//! - `POST /reload`: a reload, as SIGHUP asks for one; 200 with what changed,
//!   or 409 with why it was refused (nothing changed then).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::runtime::{Phase, Readiness};

#[derive(Serialize)]
struct Ready {
    ready: bool,
    cells: Vec<CellPhase>,
    not_ready: Vec<String>,
}

#[derive(Serialize)]
struct CellPhase {
    name: String,
    phase: Phase,
}

/// A reload asked over HTTP, answered with its outcome.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

pub fn router(readiness: Arc<Readiness>, reloads: mpsc::Sender<ReloadRequest>) -> Router {
    Router::new()
        .route(
            "/reload",
            post(move || {
                let reloads = reloads.clone();
                async move { reload(&reloads).await }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    crate::metrics::get().encode(),
                )
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let readiness = Arc::clone(&readiness);
                async move { ready(&readiness) }
            }),
        )
}

async fn reload(reloads: &mpsc::Sender<ReloadRequest>) -> (StatusCode, String) {
    let (reply, outcome) = oneshot::channel();
    if reloads.send(reply).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the host is shutting down\n".into(),
        );
    }
    match outcome.await {
        Ok(Ok(summary)) => (StatusCode::OK, format!("reloaded: {summary}\n")),
        Ok(Err(why)) => (
            StatusCode::CONFLICT,
            format!("reload refused, nothing changed: {why}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the host is shutting down\n".into(),
        ),
    }
}

fn ready(readiness: &Readiness) -> (StatusCode, Json<Ready>) {
    let phases = readiness.phases();
    // A restarting cell has initialised before and is on its way back.
    let not_ready = phases
        .iter()
        .filter(|(_, phase)| matches!(phase, Phase::Starting | Phase::Stopped))
        .map(|(name, _)| (*name).to_owned())
        .collect::<Vec<_>>();
    let body = Ready {
        ready: not_ready.is_empty(),
        cells: phases
            .iter()
            .map(|&(name, phase)| CellPhase {
                name: name.to_owned(),
                phase,
            })
            .collect(),
        not_ready,
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
