//! A cell's WASI stdout and stderr, captured line by line into the host log.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest partial line kept before it is logged anyway, so a cell that never
/// writes a newline cannot grow host memory.
const MAX_LINE: usize = 16 * 1024;

#[derive(Clone)]
pub struct CellOutput {
    cell: Arc<str>,
    stream: &'static str,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl CellOutput {
    pub fn new(cell: Arc<str>, stream: &'static str) -> CellOutput {
        CellOutput {
            cell,
            stream,
            pending: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = crate::logsafe::Escaped(text.trim_end_matches('\r'));
        let cell = &*self.cell;
        if self.stream == "stderr" {
            tracing::warn!(target: "cell", cell, stream = self.stream, "{text}");
        } else {
            tracing::info!(target: "cell", cell, stream = self.stream, "{text}");
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap();
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if pending.len() > MAX_LINE {
            let line = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    /// Logs a trailing partial line, e.g. when the instance goes away.
    pub fn flush_partial(&self) {
        let line = std::mem::take(&mut *self.pending.lock().unwrap());
        if !line.is_empty() {
            self.emit(&line);
        }
    }
}

impl IsTerminal for CellOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CellOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CellOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CellOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl tokio::io::AsyncWrite for CellOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
