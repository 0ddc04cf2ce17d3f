//! A WebSocket endpoint on `/ws`: echoes frames to their sender, broadcasts
//! `all:<text>` to every connection and closes on `close-me`.

use std::collections::BTreeSet;

use pulp_guest::ws::{self, Message, WsClose, WsFrame, WsOpen};
use pulp_guest::{export_cell, log, Cell, Config, Error, Event, Step};

struct WsEcho {
    conns: BTreeSet<u64>,
}

impl Cell for WsEcho {
    fn init(_config: Config) -> Result<Self, String> {
        if let Err(code) = ws::register("/ws") {
            log::error(&format!("register failed {}", code.raw()));
        }
        log::info("wsecho ready");
        Ok(WsEcho {
            conns: BTreeSet::new(),
        })
    }

    fn step(&mut self, step: &Step) -> i32 {
        let Some(event) = step.event() else {
            return 0;
        };
        match self.handle(&event) {
            Ok(()) => 0,
            Err(err) => {
                log::error(&err.to_string());
                1
            }
        }
    }
}

impl WsEcho {
    fn handle(&mut self, event: &Event) -> Result<(), Error> {
        match event.kind() {
            WsOpen::KIND => {
                let open: WsOpen = event.decode()?;
                log::info(&format!("ws open {} path={}", open.conn_id, open.path));
                self.conns.insert(open.conn_id);
            }
            WsFrame::KIND => {
                let frame: WsFrame = event.decode()?;
                let conn_id = frame.conn_id;
                match Message::from_frame(frame) {
                    Some(Message::Text(text)) if text == "close-me" => {
                        // Forgotten now rather than on ws.close, so a
                        // broadcast in between does not reach it.
                        self.conns.remove(&conn_id);
                        if let Err(code) = ws::close(conn_id, 4000, "bye") {
                            log::warn(&format!("ws close failed {conn_id} {}", code.raw()));
                        }
                    }
                    Some(Message::Text(text)) if text.starts_with("all:") => {
                        let message = Message::Text(text["all:".len()..].to_owned());
                        for &conn in &self.conns {
                            send(conn, &message);
                        }
                    }
                    Some(message) => send(conn_id, &message),
                    None => log::warn(&format!("ws frame not text or binary on {conn_id}")),
                }
            }
            WsClose::KIND => {
                let close: WsClose = event.decode()?;
                log::info(&format!("ws close {} code={}", close.conn_id, close.code));
                self.conns.remove(&close.conn_id);
            }
            _ => {}
        }
        Ok(())
    }
}

fn send(conn_id: u64, message: &Message) {
    if let Err(code) = ws::send(conn_id, message) {
        log::warn(&format!("ws send failed {conn_id} {}", code.raw()));
    }
}

export_cell!(WsEcho);
