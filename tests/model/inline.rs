//! Fixed-capacity collections stored inline, so a model state is one flat
//! value: cloning it is a copy and dropping it is free. In a debug build the
//! heap-allocating collections made clone, drop and hash most of the cost.
//!
//! Unused slots always hold `T::default()`; equality and hashing look at the
//! used prefix only.

use std::hash::{Hash, Hasher};

/// An ordered list of at most `N` items.
#[derive(Clone, Copy)]
pub struct List<T: Copy + Default, const N: usize> {
    len: u8,
    items: [T; N],
}

impl<T: Copy + Default, const N: usize> Default for List<T, N> {
    fn default() -> Self {
        List {
            len: 0,
            items: [T::default(); N],
        }
    }
}

impl<T: Copy + Default, const N: usize> List<T, N> {
    pub fn as_slice(&self) -> &[T] {
        &self.items[..usize::from(self.len)]
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.items[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.as_slice().iter()
    }

    pub fn push(&mut self, x: T) {
        assert!(self.len() < N, "inline list full (capacity {N}): raise it");
        self.items[self.len()] = x;
        self.len += 1;
    }

    pub fn insert(&mut self, at: usize, x: T) {
        self.push(x);
        self.as_mut_slice()[at..].rotate_right(1);
    }

    pub fn remove(&mut self, at: usize) -> T {
        let x = self.items[at];
        self.as_mut_slice()[at..].rotate_left(1);
        self.len -= 1;
        self.items[self.len()] = T::default();
        x
    }

    pub fn truncate(&mut self, len: usize) {
        while self.len() > len {
            self.remove(self.len() - 1);
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut i = 0;
        while i < self.len() {
            if keep(&self.items[i]) {
                i += 1;
            } else {
                self.remove(i);
            }
        }
    }
}

impl<T: Copy + Default + PartialEq, const N: usize> PartialEq for List<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Copy + Default + Eq, const N: usize> Eq for List<T, N> {}

impl<T: Copy + Default + Hash, const N: usize> Hash for List<T, N> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_slice().hash(h);
    }
}

impl<T: Copy + Default + std::fmt::Debug, const N: usize> std::fmt::Debug for List<T, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// A sorted set of at most `N` items: a canonical form for a multiset of
/// messages once identical copies are merged.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Set<T: Copy + Default + Ord, const N: usize>(List<T, N>);

impl<T: Copy + Default + Ord, const N: usize> Set<T, N> {
    pub fn as_slice(&self) -> &[T] {
        self.0.as_slice()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn first(&self) -> Option<T> {
        self.0.as_slice().first().copied()
    }

    pub fn contains(&self, x: &T) -> bool {
        self.0.as_slice().binary_search(x).is_ok()
    }

    pub fn insert(&mut self, x: T) {
        if let Err(at) = self.0.as_slice().binary_search(&x) {
            self.0.insert(at, x);
        }
    }

    pub fn remove(&mut self, x: &T) {
        if let Ok(at) = self.0.as_slice().binary_search(x) {
            self.0.remove(at);
        }
    }

    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.0.retain(keep);
    }

    pub fn clear(&mut self) {
        self.0.truncate(0);
    }
}

impl<T: Copy + Default + Ord + std::fmt::Debug, const N: usize> std::fmt::Debug for Set<T, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.as_slice()).finish()
    }
}
