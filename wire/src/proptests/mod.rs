//! Property tests: arbitrary bytes given to the MessagePack reader and to the
//! `http.request` and `http_respond` decoders never panic and never allocate
//! by a declared length; valid encodings, in every wire form, read back as
//! what was encoded. `rmp`/`rmpv` serve as the reference decoders.
//!
//! The test binary's allocator, [`Counting`], counts what the calling thread
//! allocates while [`allocations`](crate::testing::allocations) runs a
//! closure, so "allocates nothing" is measured, not assumed.

mod http;
mod reader;

use proptest::prelude::*;

use crate::testing::Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// An array or map header whose count asks for more values than the bytes
/// after it hold, each of which is one whole value (a fixint or an empty
/// fixstr).
#[derive(Clone, Debug)]
struct Forged {
    /// The marker and the count.
    header: Vec<u8>,
    tail: Vec<u8>,
}

fn forged() -> impl Strategy<Value = Forged> {
    (
        prop::sample::select(vec![0xdcu8, 0xdd, 0xde, 0xdf]),
        any::<u32>(),
        proptest::collection::vec(prop_oneof![0u8..=0x7f, Just(0xa0u8)], 0..64),
    )
        .prop_filter_map("the count fits the tail", |(marker, count, tail)| {
            let width = if marker & 1 == 0 { 2 } else { 4 };
            let count = if width == 2 { count & 0xffff } else { count };
            let per_entry = if marker >= 0xde { 2 } else { 1 };
            (u64::from(count) * per_entry > tail.len() as u64).then(|| {
                let mut header = vec![marker];
                header.extend_from_slice(&count.to_be_bytes()[4 - width..]);
                Forged { header, tail }
            })
        })
}

impl Forged {
    fn bytes(&self) -> Vec<u8> {
        [&self.header[..], &self.tail].concat()
    }

    /// The header over as many empty strings: a map or array of strings
    /// reads every one of them before the input runs out.
    fn over_empty_strings(&self) -> Vec<u8> {
        let mut out = self.header.clone();
        out.extend(std::iter::repeat_n(0xa0u8, self.tail.len()));
        out
    }
}
