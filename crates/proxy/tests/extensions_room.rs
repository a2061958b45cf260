//! `ext::make_room`: a request's extension map, once prepared, takes a gateway stack's
//! extensions without growing (one allocation per inserted value, none for tables).
//!
//! Runs without the libtest harness (`harness = false` in Cargo.toml): the counter sees every
//! thread, and this one is the only one, so nothing else allocates while a region is measured.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Clone, Debug, PartialEq)]
struct Ext<const N: usize>(u64);

/// Inserts `count` (at most 16) distinct extension types, each one boxed by `http`.
fn insert(map: &mut http::Extensions, count: usize) {
    macro_rules! each {
        ($($n:literal)*) => {$(
            if $n < count {
                map.insert(Ext::<$n>($n));
            }
        )*};
    }
    each!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
}

/// Allocations made while `f` runs.
fn allocations(f: impl FnOnce()) -> usize {
    let region = Region::new(GLOBAL);
    f();
    region.change().allocations
}

fn main() {
    a_prepared_map_holds_a_stacks_extensions_without_growing();
}

fn a_prepared_map_holds_a_stacks_extensions_without_growing() {
    let room = kubegate_proxy::ext::EXTENSIONS_ROOM;
    // Built once, outside the measured regions.
    kubegate_proxy::ext::make_room(&mut http::Extensions::new());

    // Preparing a request's map: the map and its table.
    let mut prepared = http::Extensions::new();
    assert_eq!(
        allocations(|| kubegate_proxy::ext::make_room(&mut prepared)),
        2
    );
    // Then one box per value and nothing else, up to the room promised.
    assert_eq!(allocations(|| insert(&mut prepared, room)), room);
    assert_eq!(prepared.get::<Ext<0>>(), Some(&Ext(0)));
    assert_eq!(prepared.get::<Ext<13>>(), Some(&Ext(13)));
    // One more outgrows it.
    assert!(allocations(|| insert_one_more(&mut prepared)) > 1);

    // An unprepared map allocates its table three times on the way to the same count
    // (and its map box): what the reference gateway's requests paid before.
    let mut plain = http::Extensions::new();
    assert_eq!(allocations(|| insert(&mut plain, room)), room + 4);

    // What is already there (hyper's upgrade handle, say) stays.
    let mut carried = http::Extensions::new();
    carried.insert(Ext::<15>(15));
    kubegate_proxy::ext::make_room(&mut carried);
    assert_eq!(carried.get::<Ext<15>>(), Some(&Ext(15)));
    assert_eq!(allocations(|| insert(&mut carried, room - 1)), room - 1);
}

fn insert_one_more(map: &mut http::Extensions) {
    map.insert(Ext::<15>(15));
}
