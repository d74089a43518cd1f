//! [`Retained`]: a value replaced whole while readers borrow it for as long as its owner
//! lives, at the cost of one atomic load per read.
//!
//! Every value ever installed is kept until the `Retained` is dropped, so a `&T` handed out
//! stays valid however long its holder keeps it (a [`Decision`](crate::Decision) borrowing
//! its rules). For what is replaced rarely and is small — compiled rules on a reload — that
//! beats a reference count per read.
//!
//! This is the one module of the crate with `unsafe`: three dereferences of a pointer into a
//! box that is owned by `all` and never freed or moved before the `Retained` is.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicPtr, Ordering};

use parking_lot::Mutex;

/// The current value and every one before it.
#[derive(Debug)]
pub(crate) struct Retained<T> {
    /// Only ever grows while `self` lives: `current` and every reference handed out point
    /// into these boxes, which never move.
    all: Mutex<Vec<Box<T>>>,
    current: AtomicPtr<T>,
}

impl<T> Retained<T> {
    pub(crate) fn new(value: T) -> Self {
        let mut first = Box::new(value);
        let current = AtomicPtr::new(&mut *first);
        Retained {
            all: Mutex::new(vec![first]),
            current,
        }
    }

    /// The current value.
    #[inline(always)]
    pub(crate) fn current(&self) -> &T {
        // SAFETY: `current` always points into a box of `all`, and boxes are only ever added
        // to `all` (never removed or moved out) until `self` is dropped; the borrow of `self`
        // bounds the reference's life.
        unsafe { &*self.current.load(Ordering::Acquire) }
    }

    /// Makes `value` the current value; returns it.
    pub(crate) fn install(&self, value: T) -> &T {
        let mut boxed = Box::new(value);
        let pointer: *mut T = &mut *boxed;
        self.all.lock().push(boxed);
        self.current.store(pointer, Ordering::Release);
        // SAFETY: as in `current`.
        unsafe { &*pointer }
    }

    /// The newest value (current or replaced) for which `pick` holds.
    pub(crate) fn find(&self, pick: impl Fn(&T) -> bool) -> Option<&T> {
        let current = self.current();
        if pick(current) {
            return Some(current);
        }
        let all = self.all.lock();
        let found: *const T = &**all.iter().rev().find(|v| pick(v))?;
        // SAFETY: as in `current`.
        Some(unsafe { &*found })
    }

    /// How many values are kept.
    pub(crate) fn count(&self) -> usize {
        self.all.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::Retained;

    #[test]
    fn a_value_borrowed_before_a_replacement_stays_valid() {
        let retained = Retained::new(String::from("first"));
        let first = retained.current();
        for i in 0..100 {
            retained.install(format!("value {i}"));
        }
        assert_eq!(first, "first");
        assert_eq!(retained.current(), "value 99");
        assert_eq!(
            retained.find(|v| v == "value 7").map(String::as_str),
            Some("value 7")
        );
        assert_eq!(retained.find(|v| v == "absent"), None);
        assert_eq!(retained.count(), 101);
    }
}
