//! The near cache (work in progress, not wired yet): loads answered from memory, kept true by
//! Redis's client-side-caching invalidations.

#![allow(dead_code, reason = "not wired into the store yet")]

pub(crate) mod cache;
pub(crate) mod tracker;
