//! Property-test tools for the crates that decode Pulp's wire format: a
//! global allocator that measures what a decoder allocates, arbitrary and
//! MessagePack-biased bytes, and MessagePack values written in every wire
//! form. Built for this crate's tests and, behind the `testing` feature, for
//! other crates' tests; not part of the format.
//!
//! A library cannot install a global allocator, so each test binary declares
//! `#[global_allocator] static ALLOCATOR: Counting = Counting;` itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use rmp::encode;

// ---------------------------------------------------------------------------
// Counting allocator.

/// Forwards to `System`, counting what the calling thread allocates while
/// [`allocations`] runs a closure.
pub struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            LARGEST.with(|l| l.set(l.get().max(size)));
            TOTAL.with(|t| t.set(t.get().saturating_add(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; `note` only touches
// const-initialised thread-locals without destructors, so it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Bytes the calling thread allocated while [`allocations`] ran a closure.
#[derive(Debug, Clone, Copy)]
pub struct Allocated {
    /// The largest single allocation.
    pub largest: usize,
    /// All of them together.
    pub total: usize,
}

/// Runs `f`, with what it allocated on this thread: only measured when the
/// test binary's global allocator is [`Counting`].
pub fn allocations<R>(f: impl FnOnce() -> R) -> (R, Allocated) {
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|t| t.set(0));
    TRACKING.with(|t| t.set(true));
    let result = f();
    TRACKING.with(|t| t.set(false));
    let allocated = Allocated {
        largest: LARGEST.with(Cell::get),
        total: TOTAL.with(Cell::get),
    };
    (result, allocated)
}

/// What a decoder may allocate for `input_len` bytes: a fixed allowance
/// plus a multiple of the input, far below what a forged count would ask.
pub fn allowance(input_len: usize) -> usize {
    4 * 1024 + 64 * input_len
}

/// The configuration every property runs with.
pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        // No proptest-regressions/ files next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Strategies.

/// Arbitrary bytes, half of them biased towards MessagePack markers and
/// length fields so that more inputs get past the first byte. At most 300
/// bytes, so nesting stays within rmpv's depth limit.
pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let markery = prop_oneof![
        4 => 0xc0u8..=0xdf,
        2 => 0x80u8..=0xbf,
        2 => 0x00u8..=0x10,
        1 => Just(0xffu8),
        1 => any::<u8>(),
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(markery, 0..300),
    ]
}

/// Lengths of strict prefixes to try: all of them for short inputs, about
/// 128 spread evenly for longer ones.
pub fn cuts(len: usize) -> impl Iterator<Item = usize> {
    (0..len).step_by((len / 128).max(1))
}

/// A MessagePack value with the wire form of each part chosen by its `u8`
/// (every valid form for the value, not only the shortest).
#[derive(Clone, Debug)]
pub enum V {
    Nil,
    Bool(bool),
    Int(i64, u8),
    /// Over `i64::MAX`: a valid value with no `Scalar`.
    BigUint(u64),
    F32(f32),
    F64(f64),
    Str(String, u8),
    Bin(Vec<u8>, u8),
    Ext(i8, Vec<u8>),
    Array(Vec<V>, u8),
    Map(Vec<(V, V)>, u8),
}

pub fn value() -> impl Strategy<Value = V> {
    let leaf = prop_oneof![
        Just(V::Nil),
        any::<bool>().prop_map(V::Bool),
        (any::<i64>(), any::<u8>()).prop_map(|(i, w)| V::Int(i, w)),
        (-300i64..300, any::<u8>()).prop_map(|(i, w)| V::Int(i, w)),
        ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(V::BigUint),
        any::<f32>().prop_map(V::F32),
        any::<f64>().prop_map(V::F64),
        ("\\PC{0,40}", any::<u8>()).prop_map(|(s, w)| V::Str(s, w)),
        (proptest::collection::vec(any::<u8>(), 0..40), any::<u8>())
            .prop_map(|(b, w)| V::Bin(b, w)),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(t, b)| V::Ext(t, b)),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            (proptest::collection::vec(inner.clone(), 0..8), any::<u8>())
                .prop_map(|(items, w)| V::Array(items, w)),
            (
                proptest::collection::vec((inner.clone(), inner), 0..4),
                any::<u8>()
            )
                .prop_map(|(entries, w)| V::Map(entries, w)),
        ]
    })
}

/// The `w`-th (mod count) of the forms that can carry `len`: each form as its
/// marker and length-field width; `fix` is the fix form's base marker.
fn pick_len_form(len: usize, w: u8, fix: Option<(u8, usize)>, sized: [u8; 3]) -> (u8, usize) {
    let mut forms: Vec<(u8, usize)> = Vec::new();
    if let Some((base, _)) = fix.filter(|&(_, max)| len <= max) {
        forms.push((base | len as u8, 0));
    }
    for (i, marker) in sized.into_iter().enumerate() {
        let width = 1usize << i; // 1, 2, 4 bytes
        if marker != 0 && (width == 4 || len < 1usize << (8 * width)) {
            forms.push((marker, width));
        }
    }
    forms[usize::from(w) % forms.len()]
}

fn write_len_form(out: &mut Vec<u8>, (marker, width): (u8, usize), len: usize) {
    out.push(marker);
    out.extend_from_slice(&(len as u64).to_be_bytes()[8 - width..]);
}

/// Writes `v` in the forms its `u8`s choose.
pub fn encode_value(out: &mut Vec<u8>, v: &V) {
    match v {
        V::Nil => encode::write_nil(out).unwrap(),
        V::Bool(b) => encode::write_bool(out, *b).unwrap(),
        V::Int(i, w) => encode_int(out, *i, *w),
        V::BigUint(u) => encode::write_u64(out, *u).unwrap(),
        V::F32(f) => encode::write_f32(out, *f).unwrap(),
        V::F64(f) => encode::write_f64(out, *f).unwrap(),
        V::Str(s, w) => {
            let form = pick_len_form(s.len(), *w, Some((0xa0, 31)), [0xd9, 0xda, 0xdb]);
            write_len_form(out, form, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        V::Bin(b, w) => {
            let form = pick_len_form(b.len(), *w, None, [0xc4, 0xc5, 0xc6]);
            write_len_form(out, form, b.len());
            out.extend_from_slice(b);
        }
        V::Ext(t, b) => {
            encode::write_ext_meta(out, b.len() as u32, *t).unwrap();
            out.extend_from_slice(b);
        }
        V::Array(items, w) => {
            let form = pick_len_form(items.len(), *w, Some((0x90, 15)), [0, 0xdc, 0xdd]);
            write_len_form(out, form, items.len());
            for item in items {
                encode_value(out, item);
            }
        }
        V::Map(entries, w) => {
            let form = pick_len_form(entries.len(), *w, Some((0x80, 15)), [0, 0xde, 0xdf]);
            write_len_form(out, form, entries.len());
            for (k, v) in entries {
                encode_value(out, k);
                encode_value(out, v);
            }
        }
    }
}

/// Writes `i` in the `w`-th (mod count) of the integer forms that can hold it.
fn encode_int(out: &mut Vec<u8>, i: i64, w: u8) {
    type Writer = fn(&mut Vec<u8>, i64);
    let mut forms: Vec<Writer> = Vec::new();
    if (0..=127).contains(&i) {
        forms.push(|o, i| {
            encode::write_pfix(o, i as u8).unwrap();
        });
    }
    if (-32..0).contains(&i) {
        forms.push(|o, i| {
            encode::write_nfix(o, i as i8).unwrap();
        });
    }
    if (0..=i64::from(u8::MAX)).contains(&i) {
        forms.push(|o, i| {
            encode::write_u8(o, i as u8).unwrap();
        });
    }
    if (0..=i64::from(u16::MAX)).contains(&i) {
        forms.push(|o, i| {
            encode::write_u16(o, i as u16).unwrap();
        });
    }
    if (0..=i64::from(u32::MAX)).contains(&i) {
        forms.push(|o, i| {
            encode::write_u32(o, i as u32).unwrap();
        });
    }
    if i >= 0 {
        forms.push(|o, i| {
            encode::write_u64(o, i as u64).unwrap();
        });
    }
    if i8::try_from(i).is_ok() {
        forms.push(|o, i| {
            encode::write_i8(o, i as i8).unwrap();
        });
    }
    if i16::try_from(i).is_ok() {
        forms.push(|o, i| {
            encode::write_i16(o, i as i16).unwrap();
        });
    }
    if i32::try_from(i).is_ok() {
        forms.push(|o, i| {
            encode::write_i32(o, i as i32).unwrap();
        });
    }
    forms.push(|o, i| {
        encode::write_i64(o, i).unwrap();
    });
    forms[usize::from(w) % forms.len()](out, i);
}

/// `v` as [`encode_value`] writes it.
pub fn encoded(v: &V) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(&mut out, v);
    out
}

/// Floats compared bit for bit, so that NaN equals itself and `-0.0` does not
/// equal `0.0`.
pub fn same_float(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}
