//! Scratch buffers each thread keeps from one kernel call to the next.
//!
//! A kernel's per-thread buffers (transformed tiles, staged rows, packed
//! panels) run to a few hundred kilobytes. Made afresh for every call,
//! they are zeroed afresh too, since memory that malloc hands back out is
//! not known to be zero: in a tiny training step that `memset` took about
//! 1% of the time. Each thread keeps one value of each scratch type
//! instead, and lends it to the next call on that thread. Kernels that
//! take a kept value must not count on its contents: it holds whatever the
//! last call left, in buffers sized for the largest call so far.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

thread_local! {
    /// One kept value per type, boxed.
    static KEPT: RefCell<HashMap<TypeId, Box<dyn Any>>> = RefCell::new(HashMap::new());
}

/// A `T` lent by the current thread's store (a default one if the store
/// has none, or another call on this thread holds it), put back when
/// dropped.
pub(crate) struct Kept<T: Default + 'static>(Option<T>);

impl<T: Default + 'static> Kept<T> {
    pub(crate) fn take() -> Kept<T> {
        let kept = KEPT.with(|store| store.borrow_mut().remove(&TypeId::of::<T>()));
        Kept(Some(kept.map_or_else(T::default, |value| *value.downcast::<T>().expect("values are stored under their own type"))))
    }
}

impl<T: Default + 'static> Deref for Kept<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("held until dropped")
    }
}

impl<T: Default + 'static> DerefMut for Kept<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("held until dropped")
    }
}

impl<T: Default + 'static> Drop for Kept<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            // While the thread exits its store may be gone: the value is
            // then simply dropped.
            let _ = KEPT.try_with(|store| store.borrow_mut().insert(TypeId::of::<T>(), Box::new(value)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Kept;

    #[test]
    fn a_value_comes_back_to_the_next_taker_on_the_same_thread() {
        #[derive(Default)]
        struct Buffers {
            values: Vec<f32>,
        }
        {
            let mut first = Kept::<Buffers>::take();
            first.values.resize(1000, 1.0);
            // Taken while the first is lent: a fresh one.
            assert!(Kept::<Buffers>::take().values.is_empty());
        }
        assert_eq!(Kept::<Buffers>::take().values.len(), 1000);
        // Another thread has a store of its own.
        std::thread::spawn(|| assert!(Kept::<Buffers>::take().values.is_empty())).join().unwrap();
    }
}
