//! A cell that talks to the host the way cells built with Go do, without the
//! Rust SDK's conventions: `pulp_alloc(0)` answers 0, absent fields are sent
//! as MessagePack nil (Go's nil slices and maps), an empty input is pointer 0
//! with length 0, and it polls from `pulp_step` between events.
//!
//! Routes: `/empty` reads an empty file, `/fetch?url=` fetches with every
//! optional field nil, `/ticks` counts the steps without an event, `/bare`
//! answers with nil headers, body and cookies.

use std::alloc::{alloc, dealloc, Layout};
use std::cell::Cell;

use pulp_guest::http::RequestView;
use pulp_guest::msgpack::{map_entries, Reader};
use pulp_guest::{raw, Step};
use rmp::encode::{write_map_len, write_nil, write_str, write_uint};

thread_local! {
    static TICKS: Cell<u64> = const { Cell::new(0) };
}

fn layout(size: i32) -> Option<Layout> {
    Layout::from_size_align(usize::try_from(size).ok()?, 8).ok()
}

/// As Go's allocator: nothing, and 0, for zero bytes.
#[no_mangle]
pub extern "C" fn pulp_alloc(size: i32) -> i32 {
    match layout(size) {
        Some(layout) if layout.size() > 0 => {
            // SAFETY: a non-zero size with a valid alignment.
            unsafe { alloc(layout) as i32 }
        }
        _ => 0,
    }
}

#[no_mangle]
pub extern "C" fn pulp_free(ptr: i32, size: i32) {
    if let Some(layout) = layout(size).filter(|l| ptr != 0 && l.size() > 0) {
        // SAFETY: `ptr` came from `pulp_alloc(size)` with this layout.
        unsafe { dealloc(ptr as *mut u8, layout) }
    }
}

fn register(method: &str, path: &str) -> i32 {
    let mut route = Vec::new();
    write_map_len(&mut route, 2).unwrap();
    write_str(&mut route, "method").unwrap();
    write_str(&mut route, method).unwrap();
    write_str(&mut route, "path").unwrap();
    write_str(&mut route, path).unwrap();
    // SAFETY: the bytes outlive the call.
    unsafe { raw::http_register(route.as_ptr() as i32, route.len() as i32) }
}

#[no_mangle]
pub extern "C" fn pulp_init(_config_ptr: i32, _config_len: i32) -> i32 {
    for path in ["/empty", "/fetch", "/ticks", "/bare"] {
        if register("GET", path) != 0 {
            return 1;
        }
    }
    let name = "empty.txt";
    // An empty write as Go makes it: a nil slice, pointer 0 and length 0.
    // SAFETY: the name outlives the call; 0/0 is an empty input.
    unsafe { raw::fs_write(name.as_ptr() as i32, name.len() as i32, 0, 0) }
}

/// Calls an import that returns bytes; the code and the bytes (copied out).
fn receive(import: impl FnOnce(i32, i32) -> i32) -> (i32, Vec<u8>) {
    let mut slots = [0u32; 2];
    let code = import(
        &mut slots[0] as *mut u32 as i32,
        &mut slots[1] as *mut u32 as i32,
    );
    let (ptr, len) = (slots[0] as i32, slots[1] as i32);
    let bytes = if ptr == 0 || len == 0 {
        Vec::new()
    } else {
        // SAFETY: the host stored a pulp_alloc buffer of `len` bytes there.
        let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) }.to_vec();
        pulp_free(ptr, len);
        bytes
    };
    (code, bytes)
}

fn fetch(url: &str) -> String {
    let mut request = Vec::new();
    write_map_len(&mut request, 5).unwrap();
    write_str(&mut request, "method").unwrap();
    write_nil(&mut request).unwrap();
    write_str(&mut request, "url").unwrap();
    write_str(&mut request, url).unwrap();
    for nil in ["headers", "body", "timeout_ns"] {
        write_str(&mut request, nil).unwrap();
        write_nil(&mut request).unwrap();
    }
    let (code, response) = receive(|ptr_out, len_out| {
        // SAFETY: the request outlives the call; the out-slots are ours.
        unsafe {
            raw::http_fetch(request.as_ptr() as i32, request.len() as i32, ptr_out, len_out)
        }
    });
    if code != 0 {
        return format!("code={code}");
    }
    let Ok(fields) = map_entries(&response) else {
        return "response is not a map".to_owned();
    };
    let field = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let status = field("status").and_then(|v| Reader::new(v).uint());
    let body = field("body").and_then(|v| Reader::new(v).bytes());
    format!(
        "code=0 status={} body={}",
        status.unwrap_or_default(),
        String::from_utf8_lossy(body.unwrap_or_default())
    )
}

fn read_empty() -> String {
    let name = "empty.txt";
    let (code, data) = receive(|ptr_out, len_out| {
        // SAFETY: the name outlives the call; the out-slots are ours.
        unsafe { raw::fs_read(name.as_ptr() as i32, name.len() as i32, ptr_out, len_out) }
    });
    format!("code={code} len={}", data.len())
}

/// Answers with `body`, or with headers, body and cookies all nil.
fn respond(id: u64, body: Option<&str>) -> i32 {
    let mut reply = Vec::new();
    write_map_len(&mut reply, 5).unwrap();
    write_str(&mut reply, "id").unwrap();
    write_uint(&mut reply, id).unwrap();
    write_str(&mut reply, "status").unwrap();
    write_uint(&mut reply, 200).unwrap();
    write_str(&mut reply, "headers").unwrap();
    write_nil(&mut reply).unwrap();
    write_str(&mut reply, "body").unwrap();
    match body {
        Some(text) => write_str(&mut reply, text).unwrap(),
        None => write_nil(&mut reply).unwrap(),
    }
    write_str(&mut reply, "cookies").unwrap();
    write_nil(&mut reply).unwrap();
    // SAFETY: the reply outlives the call.
    unsafe { raw::http_respond(reply.as_ptr() as i32, reply.len() as i32) }
}

#[no_mangle]
pub extern "C" fn pulp_step(ptr: i32, len: i32) -> i32 {
    // SAFETY: the host passes the envelope it wrote into our pulp_alloc buffer.
    let envelope = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
    let Ok(step) = Step::parse(envelope) else {
        return 1;
    };
    let Some(event) = step.event() else {
        TICKS.set(TICKS.get() + 1);
        return 0;
    };
    let Ok(request) = RequestView::decode(event.payload()) else {
        return 0;
    };
    let body = match request.path {
        "/empty" => Some(read_empty()),
        "/fetch" => Some(fetch(request.query.get("url").unwrap_or_default())),
        "/ticks" => Some(TICKS.get().to_string()),
        _ => None,
    };
    respond(request.id, body.as_deref());
    0
}
